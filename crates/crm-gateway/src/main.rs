//! `crm`: the customer-relationship core.

use clap::{Parser, Subcommand};
use crm_core::auth::{Principal, mint_hs256};
use crm_core::clock::SystemClock;
use crm_core::tenant::{self, TenantStatus};
use crm_gateway::config::{DEV_SECRET, Settings};
use crm_gateway::server::explain;
use std::process::ExitCode;
use uuid::Uuid;

/// mimalloc: responses are built from many small allocations per row; glibc malloc was a third
/// of the gateway's CPU under list load (see docs/benchmarks.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "crm",
    version,
    about = "crm: a multi-tenant CRM core served over gRPC"
)]
struct Cli {
    /// Configuration file (default: ./crm.toml if it exists). Environment variables
    /// CRM__SECTION__KEY override it, e.g. CRM__DATABASE__URL=postgres://postgres@localhost/crm.
    #[arg(long, global = true)]
    config: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the gRPC API (with grpc-web, health and reflection) on server.listen
    /// (default 127.0.0.1:50051). Migrates the database first. Stops gracefully on
    /// Ctrl-C or SIGTERM.
    Serve {
        /// Override server.listen, e.g. 0.0.0.0:50051.
        #[arg(long)]
        listen: Option<String>,
    },
    /// Publish outbox events to NATS JetStream (events.nats_url) without serving the API:
    /// the relay `crm serve` runs, as a process of its own, until Ctrl-C or SIGTERM. Also
    /// prunes published events after events.retention_hours. Migrates the database first.
    Relay {
        /// Override events.nats_url, e.g. nats://127.0.0.1:4222.
        #[arg(long)]
        nats_url: Option<String>,
    },
    /// Apply every pending schema migration to database.url and exit.
    Migrate,
    /// Print a development JWT (HS256 with auth.hs256_secret) for a tenant, user and roles.
    Token {
        /// Tenant id, e.g. demo.
        #[arg(long)]
        tenant: String,
        /// User id (a UUID; `users/` prefix allowed). Default: a fixed all-zero id.
        #[arg(long, default_value = "00000000-0000-0000-0000-000000000000")]
        user: String,
        /// Role key; repeat for several roles, e.g. --role rep --role manager.
        #[arg(long = "role", default_values_t = vec!["admin".to_string()])]
        roles: Vec<String>,
        /// Lifetime in seconds.
        #[arg(long, default_value_t = 86_400)]
        ttl: i64,
    },
    /// Create, suspend, resume and list tenants (operators).
    Tenant {
        #[command(subcommand)]
        action: TenantCommand,
    },
    /// Load a realistic demo tenant (2,000 accounts, 10,000 contacts with positions,
    /// 200 products, 50,000 orders over two years, 40 users in teams and territories, and
    /// the roles admin, manager and rep) and print a ready token for each role.
    Demo {
        /// Tenant id to create.
        #[arg(long, default_value = "demo")]
        tenant: String,
        #[arg(long, default_value_t = 2_000)]
        accounts: usize,
        #[arg(long, default_value_t = 10_000)]
        contacts: usize,
        #[arg(long, default_value_t = 200)]
        products: usize,
        #[arg(long, default_value_t = 50_000)]
        orders: usize,
        /// Concurrent writers (PostgreSQL; SQLite always writes one at a time).
        #[arg(long, default_value_t = 8)]
        concurrency: usize,
        /// Seed of the pseudo-random data.
        #[arg(long, default_value_t = 42)]
        seed: u64,
    },
}

#[derive(Subcommand)]
enum TenantCommand {
    /// Create a tenant with an `admin` role that may do everything.
    Create {
        /// 1-63 of a-z, 0-9, '-' and '_'.
        id: String,
        #[arg(long, default_value = "")]
        display_name: String,
    },
    /// Suspend a tenant: every request with its tokens is refused (PERMISSION_DENIED).
    Suspend { id: String },
    /// Resume a suspended tenant.
    Resume { id: String },
    /// List tenants.
    List,
}

fn init_tracing(s: &Settings) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(&s.log.level));
    // Colour only on a terminal: a file or a pipe gets plain text.
    let b = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    if s.log.format == "json" {
        b.json().init();
    } else {
        b.init();
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let settings = match Settings::load(cli.config.as_deref()) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("crm: {e}");
            return ExitCode::from(2);
        }
    };
    init_tracing(&settings);
    match run(cli.command, settings).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("crm: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(command: Command, mut settings: Settings) -> Result<(), String> {
    match command {
        Command::Serve { listen } => {
            if let Some(l) = listen {
                settings.server.listen = l;
                settings.validate()?;
            }
            if settings.auth.rs256_public_key_file.is_empty()
                && settings.auth.hs256_secret == DEV_SECRET
            {
                tracing::warn!(
                    "using the built-in development token secret; set CRM__AUTH__HS256_SECRET in production"
                );
            }
            let listener = tokio::net::TcpListener::bind(&settings.server.listen)
                .await
                .map_err(|e| format!("cannot listen on {}: {e}", settings.server.listen))?;
            tracing::info!(listen = %settings.server.listen, database = %redact(&settings.database.url), "crm serving");
            crm_gateway::server::serve(settings, listener, shutdown_signal()).await
        }
        Command::Relay { nats_url } => {
            if let Some(u) = nats_url {
                settings.events.nats_url = u;
                settings.validate()?;
            }
            if settings.events.nats_url.trim().is_empty() {
                return Err("crm relay needs events.nats_url (or --nats-url)".into());
            }
            let db = crm_gateway::server::open_database(&settings).await?;
            tracing::info!(database = %redact(&settings.database.url), nats = %settings.events.nats_url, "crm relay running");
            let tasks = crm_gateway::relay::Tasks::start(&db, &settings.events, true);
            shutdown_signal().await;
            tasks.stop().await;
            Ok(())
        }
        Command::Migrate => {
            crm_gateway::server::open_database(&settings).await?;
            println!("database is up to date");
            Ok(())
        }
        Command::Token {
            tenant,
            user,
            roles,
            ttl,
        } => {
            crm_core::validate::tenant_id(&tenant).map_err(|e| e.message)?;
            let user = Uuid::try_parse(user.trim_start_matches("users/"))
                .map_err(|_| "--user must be a UUID".to_string())?;
            let principal = Principal {
                tenant,
                user,
                roles,
            };
            let token = mint_hs256(
                settings.auth.hs256_secret.as_bytes(),
                &settings.auth.issuer,
                &settings.auth.audience,
                &principal,
                chrono::Utc::now().timestamp(),
                ttl,
            )
            .map_err(|e| e.message)?;
            println!("{token}");
            Ok(())
        }
        Command::Tenant { action } => {
            let db = crm_gateway::server::open_database(&settings).await?;
            let clock = SystemClock;
            match action {
                TenantCommand::Create { id, display_name } => {
                    tenant::create(&db, &clock, &id, &display_name)
                        .await
                        .map_err(|e| explain(&e))?;
                    println!("tenant {id} created with role admin");
                }
                TenantCommand::Suspend { id } => {
                    tenant::set_status(&db, &clock, &id, TenantStatus::Suspended)
                        .await
                        .map_err(|e| explain(&e))?;
                    println!("tenant {id} suspended");
                }
                TenantCommand::Resume { id } => {
                    tenant::set_status(&db, &clock, &id, TenantStatus::Active)
                        .await
                        .map_err(|e| explain(&e))?;
                    println!("tenant {id} active");
                }
                TenantCommand::List => {
                    for t in tenant::list(&db).await.map_err(|e| explain(&e))? {
                        let status = match t.status {
                            TenantStatus::Active => "active",
                            TenantStatus::Suspended => "suspended",
                        };
                        println!(
                            "{}\t{status}\t{}\t{}",
                            t.id,
                            t.create_time.format("%Y-%m-%d"),
                            t.display_name
                        );
                    }
                }
            }
            Ok(())
        }
        Command::Demo {
            tenant,
            accounts,
            contacts,
            products,
            orders,
            concurrency,
            seed,
        } => {
            let db = crm_gateway::server::open_database(&settings).await?;
            let sizes = crm_gateway::demo::Sizes {
                accounts,
                contacts,
                products,
                orders,
                users: 40,
            };
            let out = crm_gateway::demo::load(&db, &tenant, sizes, concurrency, seed).await?;
            println!("\ntenant {tenant} loaded. Tokens (valid 7 days):");
            for (role, user, token) in out.tokens(&settings)? {
                println!("\n{role} (users/{user}):\n{token}");
            }
            Ok(())
        }
    }
}

fn redact(url: &str) -> String {
    match (url.find("://"), url.find('@')) {
        (Some(s), Some(a)) if a > s => format!("{}***{}", &url[..s + 3], &url[a..]),
        _ => url.to_owned(),
    }
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
    tracing::info!("shutting down: draining in-flight requests");
}
