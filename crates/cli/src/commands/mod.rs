//! One module per subcommand.

pub mod apply;
pub mod consume;
pub mod demo;
pub mod migrate;
pub mod produce;
