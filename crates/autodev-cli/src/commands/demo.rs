//! `autodev demo`: copies the example project to a new directory, makes it a git
//! repository, and runs its spec from the recorded cassette — the real engine, tools, git and
//! tests, with only the model played back, so it needs no key and no network.
use std::path::{Path, PathBuf};

use crate::Exit;
use crate::cli::{DemoArgs, ModelArgs, RunArgs};

/// The example bundled with the source tree (override with AUTODEV_EXAMPLES).
fn examples_dir() -> PathBuf {
    std::env::var_os("AUTODEV_EXAMPLES")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples"))
}

fn copy_dir(from: &Path, to: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let target = to.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            copy_dir(&entry.path(), &target)?;
        } else {
            std::fs::copy(entry.path(), target)?;
        }
    }
    Ok(())
}

fn git(dir: &Path, args: &[&str]) -> Result<(), Exit> {
    let status = std::process::Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(args)
        .env("GIT_AUTHOR_NAME", "Demo")
        .env("GIT_AUTHOR_EMAIL", "demo@example.com")
        .env("GIT_COMMITTER_NAME", "Demo")
        .env("GIT_COMMITTER_EMAIL", "demo@example.com")
        .stdout(std::process::Stdio::null())
        .status()
        .map_err(|e| Exit::Usage(format!("cannot run git: {e}; install git")))?;
    if status.success() {
        Ok(())
    } else {
        Err(Exit::Usage(format!("git {} failed in {}", args.join(" "), dir.display())))
    }
}

/// `home`: the data directory given with --home / AUTODEV_HOME; by default the demo keeps its
/// own next to its copy of the example. (A data directory inside another Cargo workspace —
/// say, Autodev's own source tree — would make `cargo test` in the demo's worktrees refuse
/// to build.)
pub async fn demo(home: Option<PathBuf>, args: DemoArgs) -> Exit {
    let example = examples_dir().join("textstats");
    if !example.join("project").is_dir() {
        return Exit::Usage(format!(
            "example not found at {}: run the demo from the source tree, or set AUTODEV_EXAMPLES",
            example.display()
        ));
    }
    let dir = args.dir.unwrap_or_else(|| {
        let stamp = autodev_store::now_ms();
        std::env::temp_dir().join(format!("autodev-demo-{stamp}"))
    });
    let repo = dir.join("textstats");
    let home = home.unwrap_or_else(|| dir.join(".autodev"));
    if repo.exists() {
        return Exit::Usage(format!("{} already exists: pass another --dir", repo.display()));
    }
    if let Err(e) = copy_dir(&example.join("project"), &repo) {
        return Exit::Usage(format!("cannot copy the example to {}: {e}", repo.display()));
    }
    for step in
        [&["init", "--quiet", "-b", "main"][..], &["add", "-A"], &["commit", "--quiet", "-m", "textstats: count words"]]
    {
        if let Err(e) = git(&repo, step) {
            return e;
        }
    }
    if !args.json {
        println!("demo: example project copied to {}", repo.display());
        println!(
            "demo: running examples/textstats/SPEC.md with the model replayed from examples/textstats/cassette.jsonl\n"
        );
    }
    let run_args = RunArgs {
        repo: repo.clone(),
        spec: example.join("SPEC.md"),
        test_command: None,
        base: None,
        model: ModelArgs {
            model: Some("gpt-4.1".into()),
            provider: None,
            record: None,
            replay: Some(example.join("cassette.jsonl")),
        },
        max_parallel: Some(2),
        max_repair_rounds: None,
        max_steps: None,
        approve: false,
        json: args.json,
    };
    let exit = crate::commands::run::run(&home, None, run_args).await;
    if !args.json && matches!(exit, Exit::Ok) {
        println!("\ndemo: look at the result with  git -C {} log --oneline --graph --all", repo.display());
        println!("demo: and at the run with      AUTODEV_HOME={} autodev runs show --json <run>", home.display());
    }
    exit
}
