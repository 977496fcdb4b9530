//! `capgate store check|backup`: the embedded catalog database, read
//! directly from the data directory — offline or while a gateway serves
//! from it (SQLite's WAL lets a reader see one consistent snapshot).

use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};
use capgate_catalog::store::Store;

use crate::config::{Config, Settings};

#[derive(Debug, clap::Subcommand)]
pub enum StoreCommand {
    /// Check the database's integrity and count what it holds; exits 1
    /// when it is damaged.
    Check(Location),
    /// Write a consistent copy of the database to FILE (never overwrites).
    /// To restore: stop the gateway, put the copy in place of
    /// DATA_DIR/capgate.db (removing capgate.db-wal and capgate.db-shm),
    /// start it.
    Backup {
        /// Where to write the copy; must not exist.
        file: PathBuf,
        #[command(flatten)]
        location: Location,
    },
}

/// Which data directory: `--data-dir`, else the configuration's, else the
/// default — as `capgate serve` decides it.
#[derive(Debug, clap::Args)]
pub struct Location {
    /// The gateway's data directory.
    #[arg(long, env = "CAPGATE_DATA_DIR", value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// Configuration file (TOML), for its data_dir.
    #[arg(long, env = "CAPGATE_CONFIG", value_name = "FILE")]
    config: Option<PathBuf>,
}

impl Location {
    fn data_dir(self) -> anyhow::Result<PathBuf> {
        let overrides = Settings {
            data_dir: self.data_dir,
            ..Settings::default()
        };
        Ok(Config::load(self.config.as_deref(), overrides)?
            .server
            .data_dir)
    }
}

pub async fn run(command: StoreCommand) -> anyhow::Result<()> {
    match command {
        StoreCommand::Check(location) => check(&location.data_dir()?).await,
        StoreCommand::Backup { file, location } => backup(&location.data_dir()?, &file).await,
    }
}

async fn check(data_dir: &Path) -> anyhow::Result<()> {
    let (store, file) = Store::open_existing_sqlite(data_dir).await?;
    let report = store.check(&file).await?;
    if !report.is_sound() {
        for problem in &report.problems {
            println!("{problem}");
        }
        bail!(
            "{} is damaged ({} problem(s) above). Restore it from a backup, or move it aside to start with an empty catalog",
            file.display(),
            report.problems.len()
        );
    }
    println!(
        "{}: ok — {} versions, {} redefinitions, {} audit entries",
        file.display(),
        report.versions,
        report.redefinitions,
        report.audit_entries
    );
    Ok(())
}

async fn backup(data_dir: &Path, to: &Path) -> anyhow::Result<()> {
    let (store, file) = Store::open_existing_sqlite(data_dir).await?;
    store
        .backup(to)
        .await
        .with_context(|| format!("backing up {}", file.display()))?;
    // A backup nobody can restore is worse than none: check the copy.
    let copy = Store::open_existing_file(to).await?;
    let report = copy.check(to).await?;
    if !report.is_sound() {
        bail!("the copy at {} failed its integrity check", to.display());
    }
    println!(
        "{} → {}: {} versions, {} audit entries",
        file.display(),
        to.display(),
        report.versions,
        report.audit_entries
    );
    Ok(())
}
