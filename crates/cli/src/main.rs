//! `crm-sync`: the operator's and developer's tool for a crm-sync deployment.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use crm_sync_cli::commands::{admin, apply, backfill, consume, demo, dlq, migrate, produce, trail};
use crm_sync_cli::context::Context;
use crm_sync_cli::tenants_file::TenantsFile;

#[derive(Parser)]
#[command(
    name = "crm-sync",
    version,
    about = "Operate and try out a crm-sync deployment",
    after_help = "Configuration: built-in defaults < the file named by CRM_SYNC_CONFIG < environment \
                  variables CRM_SYNC__SECTION__KEY (e.g. CRM_SYNC__KAFKA__BROKERS, \
                  CRM_SYNC__DATABASE__URL, CRM_SYNC__TOPICS__EVENTS) < the flags above."
)]
struct Cli {
    /// Kafka bootstrap servers (overrides kafka.brokers)
    #[arg(long, global = true, value_name = "HOST:PORT,...")]
    brokers: Option<String>,
    /// PostgreSQL URL (overrides database.url)
    #[arg(long, global = true, value_name = "URL")]
    database_url: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Bring the database schema up to date
    Migrate,
    /// Create or update companies, integrations, workflows and teams from a YAML file (idempotent)
    Apply {
        /// The tenants file (`-` for stdin); see deploy/local/demo-tenant.yaml for the schema
        #[arg(short = 'f', long = "file", value_name = "FILE")]
        file: PathBuf,
    },
    /// Produce JSON lines (proto3 JSON of the topic's message type) as protobuf records
    Produce {
        /// Topic name, or one of events, matches, activities, users (optionally with .dlq)
        #[arg(long)]
        topic: String,
        /// JSON lines file; stdin when omitted
        #[arg(long, value_name = "FILE")]
        file: Option<PathBuf>,
        /// Record key for every line, instead of the one derived from each message
        #[arg(long)]
        key: Option<String>,
    },
    /// Print a topic's records as JSON lines
    Consume {
        /// Topic name, or one of events, matches, activities, users (optionally with .dlq)
        #[arg(long)]
        topic: String,
        /// Start at the earliest offset instead of only showing new records
        #[arg(long)]
        from_beginning: bool,
        /// Stop after this many records
        #[arg(long, value_name = "N")]
        max: Option<u64>,
        /// Stop after this many seconds without a new record
        #[arg(long, value_name = "SECS")]
        timeout: Option<u64>,
        /// Consume as this consumer group and commit offsets (default: a throwaway reader)
        #[arg(long, value_name = "GROUP")]
        group: Option<String>,
    },
    /// List, inspect and replay dead letters
    Dlq {
        #[command(subcommand)]
        action: DlqAction,
    },
    /// Run the auto-sync demo against a running stack and running services
    Demo {
        /// Base URL of the ingest service
        #[arg(long, default_value = "http://127.0.0.1:8080", value_name = "URL")]
        ingest_url: String,
        /// Base URL of ingest's ops endpoints (`http.ops_port`), checked for readiness first
        #[arg(long, default_value = "http://127.0.0.1:9080", value_name = "URL")]
        ingest_ops_url: String,
        /// Base URL of admin-api, through which the demo places its users on the team `Sales`
        #[arg(long, default_value = "http://127.0.0.1:8081", value_name = "URL")]
        admin_url: String,
        /// How long to wait for the pipeline's results
        #[arg(long, default_value_t = 60, value_name = "SECS")]
        timeout: u64,
    },
    /// Control-plane chores (admin API tokens)
    #[command(subcommand)]
    Admin(AdminCommand),
    /// Pull an integration's history from its CRM's API, and watch how far it has come
    #[command(subcommand)]
    Backfill(BackfillCommand),
    /// Why a record did (not) count: each event, every workflow's decision in words, what
    /// followed, and dead letters
    Trail {
        /// The integration's id, or its name when unique
        integration: String,
        /// The CRM's id of the record
        record_id: String,
    },
}

#[derive(Subcommand)]
enum BackfillCommand {
    /// Start a backfill (prints its id); ingest runs it
    Start {
        /// The integration's id, or its name when unique
        integration: String,
        /// Pull records modified since: a date (2026-11-01, midnight UTC) or RFC 3339 date-time
        #[arg(long, value_name = "DATE")]
        since: String,
        /// A CRM object to pull (repeatable); default: the objects of the active workflows
        #[arg(long = "object", value_name = "OBJECT")]
        objects: Vec<String>,
    },
    /// The integration's sync status and backfills, or one backfill's progress
    Status {
        /// The integration's id, or its name when unique
        integration: String,
        /// A backfill's id
        job: Option<uuid::Uuid>,
        /// Follow the backfill (this one, else the running one) with a live progress bar until
        /// it ends; exits non-zero unless it succeeded
        #[arg(long)]
        watch: bool,
    },
    /// Cancel a pending or running backfill
    Cancel {
        /// The integration's id, or its name when unique
        integration: String,
        /// The backfill's id
        job: uuid::Uuid,
    },
}

#[derive(Subcommand)]
enum AdminCommand {
    /// Create an admin API token for a company and print it (shown only this once)
    CreateToken {
        /// The company's id or slug
        #[arg(long)]
        company: String,
        /// admin (may change everything of the company) or viewer (read-only)
        #[arg(long, value_parser = ["admin", "viewer"])]
        role: String,
        /// A note saying whose or what the token is, kept in the audit log
        #[arg(long)]
        label: Option<String>,
        /// Days until the token expires (at most 730)
        #[arg(long, default_value_t = crm_sync_store::admin::tokens::DEFAULT_LIFETIME_DAYS, value_name = "DAYS")]
        expires_in_days: u32,
    },
    /// Revoke an admin API token at once (it answers 401 from then on)
    RevokeToken {
        /// The token's id (printed when it was created, listed by the admin API)
        #[arg(long, value_name = "UUID")]
        id: uuid::Uuid,
    },
    /// Have the evaluators forget the record state of an integration deleted before deletions
    /// were recorded (they name such integrations in a warning, and count them in
    /// crm_sync_evaluator_unknown_integrations); a live integration is deleted through the
    /// admin API instead
    ForgetIntegration {
        /// The deleted integration's id
        #[arg(long, value_name = "UUID")]
        id: uuid::Uuid,
    },
}

#[derive(Subcommand)]
enum DlqAction {
    /// One line per dead letter: position, reason, origin, service, time
    List {
        /// Dead-letter topic, or the topic (or alias) whose dead letters to show
        #[arg(long)]
        topic: String,
    },
    /// One dead letter whole: headers and decoded value
    Inspect {
        #[arg(long)]
        topic: String,
        /// The dead letter's position as `list` prints it, e.g. 4/0
        #[arg(
            value_name = "PARTITION/OFFSET",
            required_unless_present_all = ["partition", "offset"],
            conflicts_with_all = ["partition", "offset"]
        )]
        position: Option<dlq::Position>,
        #[arg(long, requires = "offset")]
        partition: Option<i32>,
        #[arg(long, requires = "partition")]
        offset: Option<i64>,
    },
    /// Send dead letters back to the topic they came from
    Replay {
        #[arg(long)]
        topic: String,
        /// Only the dead letter at this position, as `list` prints it (e.g. 4/0)
        #[arg(value_name = "PARTITION/OFFSET", conflicts_with_all = ["partition", "offset"])]
        position: Option<dlq::Position>,
        /// Only dead letters with this reason (e.g. unknown_integration)
        #[arg(long)]
        reason: Option<String>,
        /// Only dead letters in this partition of the dead-letter topic
        #[arg(long)]
        partition: Option<i32>,
        /// Only the dead letter at this offset (of --partition)
        #[arg(long, requires = "partition")]
        offset: Option<i64>,
        /// Show what would be replayed without sending anything
        #[arg(long)]
        dry_run: bool,
    },
}

async fn run_backfill(ctx: &Context, command: BackfillCommand) -> anyhow::Result<()> {
    let out = &mut std::io::stdout();
    match command {
        BackfillCommand::Start {
            integration,
            since,
            objects,
        } => {
            let args = backfill::StartArgs {
                integration,
                since,
                objects,
            };
            backfill::start(ctx, args, out).await
        }
        BackfillCommand::Status {
            integration,
            job,
            watch,
        } => {
            let args = backfill::StatusArgs {
                integration,
                job,
                watch,
            };
            backfill::status(ctx, args, out).await
        }
        BackfillCommand::Cancel { integration, job } => {
            backfill::cancel(ctx, backfill::CancelArgs { integration, job }, out).await
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: starting the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let ctx = Context::load(cli.brokers, cli.database_url)?;
    match cli.command {
        Command::Migrate => migrate::run(&ctx).await,
        Command::Apply { file } => run_apply(&ctx, &file).await,
        Command::Produce { topic, file, key } => {
            produce::run(&ctx, produce::ProduceArgs { topic, file, key }).await
        }
        Command::Consume {
            topic,
            from_beginning,
            max,
            timeout,
            group,
        } => {
            consume::run(
                &ctx,
                consume::ConsumeArgs {
                    topic,
                    from_beginning,
                    max,
                    timeout,
                    group,
                },
            )
            .await
        }
        Command::Dlq { action } => {
            let (topic, command) = dlq_command(action)?;
            dlq::run(&ctx, &topic, command).await
        }
        Command::Admin(AdminCommand::CreateToken {
            company,
            role,
            label,
            expires_in_days,
        }) => {
            admin::create_token(
                &ctx,
                admin::CreateTokenArgs {
                    company,
                    role,
                    label,
                    expires_in_days,
                },
                &mut std::io::stdout(),
            )
            .await
        }
        Command::Admin(AdminCommand::RevokeToken { id }) => admin::revoke_token(&ctx, id).await,
        Command::Admin(AdminCommand::ForgetIntegration { id }) => {
            admin::forget_integration(&ctx, id).await
        }
        Command::Backfill(command) => run_backfill(&ctx, command).await,
        Command::Trail {
            integration,
            record_id,
        } => trail::run(&ctx, &integration, &record_id, &mut std::io::stdout()).await,
        Command::Demo {
            ingest_url,
            ingest_ops_url,
            admin_url,
            timeout,
        } => {
            demo::run(
                &ctx,
                demo::DemoArgs {
                    ingest_url,
                    ingest_ops_url,
                    admin_url,
                    timeout: Duration::from_secs(timeout),
                },
            )
            .await
        }
    }
}

/// `crm-sync apply FILE` (`-` reads standard input).
async fn run_apply(ctx: &Context, file: &std::path::Path) -> anyhow::Result<()> {
    let (source, tenants) = if file.as_os_str() == "-" {
        let mut text = String::new();
        std::io::Read::read_to_string(&mut std::io::stdin(), &mut text)
            .context("reading the tenants file from stdin")?;
        ("stdin".to_owned(), TenantsFile::parse("stdin", &text)?)
    } else {
        (file.display().to_string(), TenantsFile::read(file)?)
    };
    let pool = ctx.pool().await?;
    let applied = apply::apply(&pool, &tenants).await?;
    apply::print_summary(&mut std::io::stdout(), &source, &applied)?;
    Ok(())
}

/// The dead-letter topic and what to do with it.
fn dlq_command(action: DlqAction) -> anyhow::Result<(String, dlq::DlqCommand)> {
    Ok(match action {
        DlqAction::List { topic } => (topic, dlq::DlqCommand::List),
        DlqAction::Inspect {
            topic,
            position,
            partition,
            offset,
        } => {
            // clap requires either the position or both flags.
            let at = position
                .or(partition.zip(offset).map(dlq::Position::from))
                .context("give the dead letter's position as `dlq list` prints it, e.g. 4/0")?;
            (topic, dlq::DlqCommand::Inspect { at })
        }
        DlqAction::Replay {
            topic,
            position,
            reason,
            partition,
            offset,
            dry_run,
        } => (
            topic,
            dlq::DlqCommand::Replay {
                reason,
                partition: position.map(|p| p.partition).or(partition),
                offset: position.map(|p| p.offset).or(offset),
                dry_run,
            },
        ),
    })
}
