//! Operations on the data: `autodev backup`, `restore` and `gc`.
//!
//! A backup is one tar archive (zstd-compressed when its name ends in `.zst`):
//!
//! - `MANIFEST.json`: format, autodev version, backend, migrations, counts, time;
//! - `database.sqlite` (SQLite's `VACUUM INTO`: a consistent copy while serving) or
//!   `database.pgdump` (`pg_dump --format=custom`: one snapshot while serving);
//! - `key-pepper` (API keys are hashed with it; without it no key authenticates) when it is a
//!   file in the data directory; a pepper given as `AUTODEV_KEY_PEPPER` is the operator's to keep;
//! - `autodev.toml` when the data directory has one;
//! - `runs/<id>/…`: run folders (reports, patches, logs), without worktrees and scratch files,
//!   which a resumed run recreates from its checkpoints.
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use autodev_store::{Migrations, Store};
use secrecy::ExposeSecret;
use serde::{Deserialize, Serialize};

use crate::Exit;
use crate::cli::{BackupArgs, GcArgs, RestoreArgs};
use crate::context::{open_store_with, redact_url, store_error};

const FORMAT: u32 = 1;

#[derive(Debug, Serialize, Deserialize)]
struct Manifest {
    format: u32,
    autodev_version: String,
    backend: String,
    created_at_ms: i64,
    migrations: Vec<i64>,
    projects: i64,
    keys: i64,
    runs: i64,
    events: i64,
    /// `file` (in the archive) or `environment` (AUTODEV_KEY_PEPPER: not in the archive).
    pepper: String,
}

fn fail(msg: impl std::fmt::Display) -> Exit {
    eprintln!("error: {msg}");
    Exit::Failed
}

pub async fn backup(home: &Path, args: BackupArgs) -> Exit {
    match backup_inner(home, &args).await {
        Ok(()) => Exit::Ok,
        Err(e) => e,
    }
}

async fn backup_inner(home: &Path, args: &BackupArgs) -> Result<(), Exit> {
    let store = open_store_with(home, Migrations::Leave).await?;
    let out = crate::context::absolute(&args.out);
    let folder = out.parent().map(Path::to_path_buf).unwrap_or_else(|| PathBuf::from("."));
    std::fs::create_dir_all(&folder).map_err(|e| Exit::Usage(format!("--out {}: {e}", out.display())))?;
    let staging = tempfile::Builder::new()
        .prefix(".autodev-backup-")
        .tempdir_in(&folder)
        .map_err(|e| Exit::Usage(format!("--out {}: cannot write there: {e}", out.display())))?;

    let database = match store.backend() {
        "sqlite" => {
            let path = staging.path().join("database.sqlite");
            store.snapshot_sqlite(&path).await.map_err(store_error)?;
            path
        }
        _ => {
            let path = staging.path().join("database.pgdump");
            let url = database_url()?;
            pg_tool("pg_dump", &url, &["--format=custom", "--no-owner", "--no-privileges", "--file"], &path)?;
            path
        }
    };
    let status = store.migration_status().await.map_err(store_error)?;
    let (projects, keys, runs, events) = store.inventory().await.map_err(store_error)?;
    let pepper_file = home.join("key-pepper");
    let pepper = if crate::config::secret("AUTODEV_KEY_PEPPER").map_err(Exit::Usage)?.is_some() {
        "environment"
    } else if pepper_file.is_file() {
        "file"
    } else {
        "none"
    };
    let manifest = Manifest {
        format: FORMAT,
        autodev_version: env!("CARGO_PKG_VERSION").to_string(),
        backend: store.backend().to_string(),
        created_at_ms: autodev_store::now_ms(),
        migrations: status.applied.iter().chain(&status.newer).copied().collect(),
        projects,
        keys,
        runs,
        events,
        pepper: pepper.to_string(),
    };

    // Written beside the target and renamed into place: a backup file is whole or absent.
    let partial = staging.path().join("archive.partial");
    let file = std::fs::File::create(&partial).map_err(|e| fail(format!("{}: {e}", partial.display())))?;
    let writer: Box<dyn Write> = if out.extension().is_some_and(|e| e == "zst") {
        Box::new(zstd::Encoder::new(file, 3).map_err(fail)?.auto_finish())
    } else {
        Box::new(file)
    };
    let mut tar = tar::Builder::new(writer);
    tar.follow_symlinks(false);
    let json = serde_json::to_vec_pretty(&manifest).map_err(fail)?;
    append_bytes(&mut tar, "MANIFEST.json", &json)?;
    let name = database.file_name().unwrap_or_default().to_string_lossy().to_string();
    tar.append_path_with_name(&database, &name).map_err(fail)?;
    if pepper == "file" {
        tar.append_path_with_name(&pepper_file, "key-pepper").map_err(fail)?;
    }
    if home.join("autodev.toml").is_file() {
        tar.append_path_with_name(home.join("autodev.toml"), "autodev.toml").map_err(fail)?;
    }
    let mut folders = 0;
    if let Ok(entries) = std::fs::read_dir(home.join("runs")) {
        for entry in entries.filter_map(Result::ok).filter(|e| e.path().is_dir()) {
            append_run_folder(&mut tar, &entry.path(), &format!("runs/{}", entry.file_name().to_string_lossy()))?;
            folders += 1;
        }
    }
    tar.into_inner().map_err(fail)?.flush().map_err(fail)?;
    set_private(&partial);
    std::fs::rename(&partial, &out).map_err(|e| fail(format!("{}: {e}", out.display())))?;
    let size = std::fs::metadata(&out).map(|m| m.len()).unwrap_or(0);
    println!(
        "backup of the {} database ({projects} projects, {keys} keys, {runs} runs, {events} events) and {folders} run folders: {} ({:.1} MB)",
        manifest.backend,
        out.display(),
        size as f64 / 1e6
    );
    if pepper == "environment" {
        println!("the key pepper comes from AUTODEV_KEY_PEPPER and is not in the backup: keep it with the backups");
    }
    if let Some(keep) = args.keep {
        prune(&out, keep);
    }
    Ok(())
}

fn append_bytes<W: Write>(tar: &mut tar::Builder<W>, name: &str, bytes: &[u8]) -> Result<(), Exit> {
    let mut header = tar::Header::new_gnu();
    header.set_size(bytes.len() as u64);
    header.set_mode(0o600);
    header.set_mtime(autodev_store::now_ms() as u64 / 1000);
    header.set_cksum();
    tar.append_data(&mut header, name, bytes).map_err(fail)
}

/// A run folder without its worktrees and scratch files (recreated by a resumed run).
fn append_run_folder<W: Write>(tar: &mut tar::Builder<W>, dir: &Path, name: &str) -> Result<(), Exit> {
    let Ok(entries) = std::fs::read_dir(dir) else { return Ok(()) };
    for entry in entries.filter_map(Result::ok) {
        let path = entry.path();
        let file = entry.file_name().to_string_lossy().to_string();
        let Ok(meta) = path.symlink_metadata() else { continue };
        if meta.is_dir() {
            if file != "worktrees" && file != "tmp" {
                append_run_folder(tar, &path, &format!("{name}/{file}"))?;
            }
        } else if meta.is_file() {
            tar.append_path_with_name(&path, format!("{name}/{file}")).map_err(fail)?;
        }
    }
    Ok(())
}

/// Keeps the newest `keep` backups beside `out` (files named like it: `autodev-…` with the
/// same extension).
fn prune(out: &Path, keep: usize) {
    let Some(folder) = out.parent() else { return };
    let ext = out.extension().map(|e| e.to_string_lossy().to_string()).unwrap_or_default();
    let Ok(entries) = std::fs::read_dir(folder) else { return };
    let mut backups: Vec<(std::time::SystemTime, PathBuf)> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| {
            p.is_file()
                && p.file_name().is_some_and(|n| n.to_string_lossy().starts_with("autodev-"))
                && p.extension().map(|e| e.to_string_lossy().to_string()).unwrap_or_default() == ext
        })
        .filter_map(|p| Some((p.metadata().ok()?.modified().ok()?, p)))
        .collect();
    backups.sort();
    let extra = backups.len().saturating_sub(keep.max(1));
    for (_, path) in backups.into_iter().take(extra) {
        if std::fs::remove_file(&path).is_ok() {
            println!("removed the older backup {}", path.display());
        }
    }
}

fn set_private(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let _ = std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600));
}

fn database_url() -> Result<String, Exit> {
    crate::config::secret("DATABASE_URL")
        .map_err(Exit::Usage)?
        .map(|u| u.expose_secret().to_string())
        .ok_or_else(|| Exit::Usage("DATABASE_URL is not set".into()))
}

/// Runs `pg_dump` or `pg_restore` on the database the URL names, with `args` then `file` (the
/// dump written or read). The password goes through the environment (PGPASSWORD), not the
/// command line, where other users could read it.
fn pg_tool(tool: &str, url: &str, args: &[&str], file: &Path) -> Result<(), Exit> {
    let mut parsed = reqwest::Url::parse(url).map_err(|e| Exit::Usage(format!("DATABASE_URL is not a URL: {e}")))?;
    let password = parsed.password().map(|p| percent_encoding::percent_decode_str(p).decode_utf8_lossy().into_owned());
    let _ = parsed.set_password(None);
    let mut cmd = std::process::Command::new(tool);
    cmd.args(args).arg(file);
    cmd.arg(format!("--dbname={parsed}"));
    if let Some(p) = password {
        cmd.env("PGPASSWORD", p);
    }
    let out = cmd.output().map_err(|e| {
        Exit::Usage(format!(
            "cannot run {tool}: {e} (install PostgreSQL's client programs, e.g. `apt-get install postgresql-client`, of the server's major version or newer)"
        ))
    })?;
    if !out.status.success() {
        return Err(fail(format!(
            "{tool} failed on {}: {}",
            redact_url(url),
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(())
}

pub async fn restore(home: &Path, args: RestoreArgs) -> Exit {
    match restore_inner(home, &args).await {
        Ok(()) => Exit::Ok,
        Err(e) => e,
    }
}

fn open_archive(path: &Path) -> Result<tar::Archive<Box<dyn Read>>, Exit> {
    let file = std::fs::File::open(path).map_err(|e| Exit::Usage(format!("--from {}: {e}", path.display())))?;
    let mut file = std::io::BufReader::new(file);
    // Compressed or not by its content (zstd's magic number), whatever the file's name.
    let zstd = std::io::BufRead::fill_buf(&mut file).map_err(fail)?.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]);
    let reader: Box<dyn Read> =
        if zstd { Box::new(zstd::Decoder::with_buffer(file).map_err(fail)?) } else { Box::new(file) };
    Ok(tar::Archive::new(reader))
}

async fn restore_inner(home: &Path, args: &RestoreArgs) -> Result<(), Exit> {
    // Unpacked into a staging folder in the data directory first: nothing is replaced until
    // the whole archive has been read.
    std::fs::create_dir_all(home).map_err(|e| Exit::Usage(format!("{}: {e} (check AUTODEV_HOME)", home.display())))?;
    let staging = tempfile::Builder::new().prefix(".restore-").tempdir_in(home).map_err(fail)?;
    let mut archive = open_archive(&args.from)?;
    archive.set_preserve_permissions(true);
    archive.unpack(staging.path()).map_err(|e| {
        Exit::Usage(format!("--from {}: not an autodev backup (cannot unpack it: {e})", args.from.display()))
    })?;
    let manifest: Manifest = std::fs::read(staging.path().join("MANIFEST.json"))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .ok_or_else(|| {
            Exit::Usage(format!("--from {}: not an autodev backup (no MANIFEST.json)", args.from.display()))
        })?;
    if manifest.format > FORMAT {
        return Err(Exit::Usage(format!(
            "--from {}: backup format {} is newer than this autodev ({}) reads; restore it with autodev {} or newer",
            args.from.display(),
            manifest.format,
            env!("CARGO_PKG_VERSION"),
            manifest.autodev_version
        )));
    }
    let target_pg = crate::config::secret("DATABASE_URL").map_err(Exit::Usage)?.is_some();
    let wanted = if target_pg { "postgres" } else { "sqlite" };
    if manifest.backend != wanted {
        return Err(Exit::Usage(if target_pg {
            "this backup holds a SQLite database: unset DATABASE_URL to restore it into AUTODEV_HOME".to_string()
        } else {
            "this backup holds a PostgreSQL database: set DATABASE_URL to the (empty) database to restore it into"
                .to_string()
        }));
    }
    // The target must be empty unless --force.
    let db_file = home.join("autodev.db");
    let has_runs = std::fs::read_dir(home.join("runs")).is_ok_and(|mut d| d.next().is_some());
    if !args.force {
        let mut present = Vec::new();
        if !target_pg && db_file.exists() {
            present.push(db_file.display().to_string());
        }
        if has_runs {
            present.push(home.join("runs").display().to_string());
        }
        if target_pg {
            let store = open_store_with(home, Migrations::Leave).await?;
            let status = store.migration_status().await.map_err(store_error)?;
            if !status.applied.is_empty() || !status.newer.is_empty() {
                present.push(format!("the database at {} (it has tables)", redact_url(&database_url()?)));
            }
        }
        if !present.is_empty() {
            return Err(Exit::Usage(format!(
                "restore goes into an empty data directory and database; these already hold data: {} (use --force to replace them)",
                present.join(", ")
            )));
        }
    }
    if target_pg {
        let url = database_url()?;
        pg_restore(&url, &staging.path().join("database.pgdump"), args.force)?;
    } else {
        for suffix in ["", "-wal", "-shm"] {
            let _ = std::fs::remove_file(home.join(format!("autodev.db{suffix}")));
        }
        std::fs::rename(staging.path().join("database.sqlite"), &db_file).map_err(fail)?;
    }
    if staging.path().join("key-pepper").is_file() {
        std::fs::rename(staging.path().join("key-pepper"), home.join("key-pepper")).map_err(fail)?;
        set_private(&home.join("key-pepper"));
    }
    if staging.path().join("autodev.toml").is_file() && (args.force || !home.join("autodev.toml").exists()) {
        std::fs::rename(staging.path().join("autodev.toml"), home.join("autodev.toml")).map_err(fail)?;
    }
    if staging.path().join("runs").is_dir() {
        std::fs::create_dir_all(home.join("runs")).map_err(fail)?;
        for entry in std::fs::read_dir(staging.path().join("runs")).map_err(fail)?.filter_map(Result::ok) {
            let dest = home.join("runs").join(entry.file_name());
            if dest.exists() {
                let _ = std::fs::remove_dir_all(&dest);
            }
            std::fs::rename(entry.path(), &dest).map_err(fail)?;
        }
    }
    // A backup of an older version is brought up to this one's schema.
    let store = open_store_with(home, Migrations::Apply).await?;
    let (projects, keys, runs, events) = store.inventory().await.map_err(store_error)?;
    println!(
        "restored the {} database from {} (made {} by autodev {}): {projects} projects, {keys} keys, {runs} runs, {events} events",
        manifest.backend,
        args.from.display(),
        humantime::format_rfc3339_seconds(
            std::time::UNIX_EPOCH + std::time::Duration::from_millis(manifest.created_at_ms.max(0) as u64)
        ),
        manifest.autodev_version
    );
    if manifest.pepper == "environment" {
        println!(
            "the backup's key pepper came from AUTODEV_KEY_PEPPER: set the same value here, or no API key authenticates"
        );
    }
    Ok(())
}

fn pg_restore(url: &str, dump: &Path, force: bool) -> Result<(), Exit> {
    let mut flags = vec!["--no-owner", "--no-privileges", "--exit-on-error", "--single-transaction"];
    if force {
        flags.extend(["--clean", "--if-exists"]);
    }
    pg_tool("pg_restore", url, &flags, dump)
}

pub async fn gc(home: &Path, args: GcArgs) -> Exit {
    let store: Store = match open_store_with(home, Migrations::Check).await {
        Ok(store) => store,
        Err(e) => return e,
    };
    let report = match autodev_engine::gc::collect(&store, home, args.older_than, args.dry_run).await {
        Ok(r) => r,
        Err(e) => return fail(e),
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report).unwrap_or_default());
        return Exit::Ok;
    }
    let verb = if args.dry_run { "would remove" } else { "removed" };
    println!(
        "{verb}: the records of {} runs that ended more than {} ago ({} events, {} tool results, {} model responses); {} run folders ({:.1} MB) with {} worktrees; {} branches and refs",
        report.runs,
        humantime::format_duration(args.older_than),
        report.events,
        report.tool_calls,
        report.model_responses,
        report.run_folders,
        report.bytes as f64 / 1e6,
        report.worktrees,
        report.refs,
    );
    if report.kept > 0 {
        println!("kept {} run folders of runs that have not ended or ended more recently", report.kept);
    }
    Exit::Ok
}
