//! The workflow model shared by the evaluator, the admin API and `crm-sync apply`: what a workflow
//! says, how it is validated before it is stored, and how it is evaluated against a CRM event.

pub mod condition;
pub mod explain;
pub mod spec;

pub use condition::{
    Comparison, Condition, ConditionError, EachTime, FieldLookup, Fields, Leaves, Literal, Mode,
    Op, Previous, Record, ValueType, Verdict,
};
pub use explain::{Explanation, Node};
pub use spec::{
    Decision, Match, NoMatch, RecordView, RetractReason, Retraction, SpecError, Trigger,
    WorkflowSpec, parse_date,
};
