//! The subcommands, one file each, and the dispatch from the parsed command line.
use std::path::Path;

use crate::Exit;
use crate::cli::{Cli, Command, RunsCommand};
use crate::context::absolute;

pub(crate) mod code;
pub(crate) mod config;
pub(crate) mod costs;
pub(crate) mod deliver;
pub(crate) mod demo;
pub(crate) mod doctor;
pub(crate) mod eval;
pub(crate) mod gates;
pub(crate) mod keys;
pub(crate) mod ops;
pub(crate) mod revert;
pub(crate) mod run;
pub(crate) mod runs;
pub(crate) mod serve;

pub async fn dispatch(cli: Cli) -> Exit {
    if let Command::Demo(args) = cli.command {
        return demo::demo(cli.home.as_deref().map(absolute), args).await;
    }
    let home = absolute(cli.home.as_deref().unwrap_or(Path::new(".autodev")));
    match cli.command {
        Command::Run(args) => run::run(&home, cli.config.as_deref(), args).await,
        Command::Resume(args) => run::resume(&home, cli.config.as_deref(), args).await,
        Command::Cancel(r) => run::cancel(&home, &r.run).await,
        Command::Costs(a) => costs::costs(&home, a.days, &a.by, a.json).await,
        Command::Index(a) => code::index(&home, cli.config.as_deref(), &a.repo, a.json).await,
        Command::Search(a) => code::search(&home, cli.config.as_deref(), &a.repo, &a.query, a.limit, a.json).await,
        Command::Ask(a) => code::ask(&home, cli.config.as_deref(), a).await,
        Command::Eval(a) => eval::eval(&home, cli.config.as_deref(), a).await,
        Command::Approve(a) => {
            gates::decide(&home, &a.decision.run, true, a.decision.comment.as_deref(), a.allow_paths).await
        }
        Command::Reject(a) => gates::decide(&home, &a.run, false, a.comment.as_deref(), Vec::new()).await,
        Command::Deliver(args) => deliver::deliver(&home, cli.config.as_deref(), &args.run, args.json).await,
        Command::Revert(args) => revert::revert(&home, cli.config.as_deref(), &args.run, args.json).await,
        Command::Runs(RunsCommand::List { limit, json }) => runs::list(&home, limit, json).await,
        Command::Runs(RunsCommand::Show { run, json }) => runs::show(&home, &run, json).await,
        Command::Doctor(args) => doctor::doctor(&home, cli.config.as_deref(), args).await,
        Command::Keys(cmd) => keys::keys(&home, cmd).await,
        Command::Config(crate::cli::ConfigCommand::Reference) => {
            print!("{}", crate::reference::markdown());
            Exit::Ok
        }
        Command::Config(crate::cli::ConfigCommand::Check { repo }) => {
            config::config_check(&home, cli.config.as_deref(), repo.as_deref())
        }
        Command::Mcp(args) => serve::mcp(&home, cli.config.as_deref(), args).await,
        Command::Serve(args) => serve::serve(&home, cli.config.as_deref(), args).await,
        Command::Worker(args) => serve::worker(&home, cli.config.as_deref(), args).await,
        Command::Gc(args) => ops::gc(&home, args).await,
        Command::Backup(args) => ops::backup(&home, args).await,
        Command::Restore(args) => ops::restore(&home, args).await,
        Command::Migrate(args) => config::migrate(&home, args.check).await,
        Command::Demo(_) => Exit::Usage("demo is handled above".into()),
    }
}
