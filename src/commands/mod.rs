//! Dispatch: one module per command family; each prints its own report.

mod bounds;
mod completions;
mod dead;
mod flow;
mod jobs;
mod logs;
mod lookup;
mod mq;
mod publish;
mod queue;
mod schedules;
mod server;
mod tasks;
mod wait;
mod workflow;

use anyhow::Context;

use crate::cli::{
    Cli, Command, DbCmd, DeadCmd, JobsCmd, MqCmd, QueueCmd, SchedulesCmd, ServerCmd, TasksCmd,
};
use crate::config::Config;
use crate::exit::Code;
use crate::store::controls::Control;

pub fn run(cli: Cli) -> anyhow::Result<Code> {
    crate::output::set_quiet(cli.quiet);
    // These need no configuration: they describe cm itself.
    match &cli.command {
        Command::Completions { shell } => return completions::completions(*shell),
        Command::Man { out } => return completions::man(out.as_deref()),
        _ => {}
    }
    let cfg = Config::discover(cli.config.as_deref())?;
    if let Command::Worker { name, detached } = &cli.command {
        return Ok(crate::worker::run(&cfg, name, *detached));
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async {
        match cli.command {
            Command::Queue(cmd) => match cmd {
                QueueCmd::Start { names } => queue::start(&cfg, &names).await,
                QueueCmd::Stop { names } => queue::stop(&cfg, &names).await,
                QueueCmd::Restart { names } => queue::restart(&cfg, &names).await,
                QueueCmd::Status { names, json, all } => {
                    queue::status(&cfg, &names, json, all).await
                }
                QueueCmd::Clean { logs } => queue::clean(&cfg, logs).await,
                QueueCmd::Pause {
                    queue,
                    host,
                    terminate,
                } => flow::order(&cfg, &queue, host, Control::Pause { terminate }).await,
                QueueCmd::Resume { queue, host } => {
                    flow::order(&cfg, &queue, host, Control::Resume).await
                }
                QueueCmd::Scale {
                    queue,
                    concurrency,
                    host,
                } => flow::order(&cfg, &queue, host, Control::Scale(concurrency)).await,
            },
            Command::Server(cmd) => match cmd {
                ServerCmd::Start => server::start(&cfg).await,
                ServerCmd::Stop => server::stop(&cfg).await,
                ServerCmd::Clean { logs } => server::clean(&cfg, logs).await,
                ServerCmd::Status { json, all } => server::status(&cfg, json, all).await,
            },
            Command::Launch(args) => publish::launch(&cfg, &args).await,
            Command::Provision(args) => publish::provision(&cfg, &args).await,
            Command::Call(args) => publish::call(&cfg, &args).await,
            Command::Jobs(args) => match &args.show {
                Some(JobsCmd::Show { id, json }) => jobs::show(&cfg, id, *json).await,
                Some(JobsCmd::Revoke {
                    ids,
                    terminate,
                    signal,
                    json,
                }) => jobs::revoke(&cfg, ids, *terminate, signal.as_deref(), *json).await,
                Some(JobsCmd::Prune { dry_run }) => schedules::prune(&cfg, *dry_run).await,
                Some(JobsCmd::Retry { id }) => workflow::retry(&cfg, id).await,
                Some(JobsCmd::Tree { id, json }) => workflow::tree(&cfg, id, *json).await,
                None => jobs::list(&cfg, &args).await,
            },
            Command::Schedules(args) => match args.cmd {
                None => schedules::list(&cfg, args.json).await,
                Some(SchedulesCmd::Pause { name }) => schedules::pause(&cfg, &name, true).await,
                Some(SchedulesCmd::Resume { name }) => schedules::pause(&cfg, &name, false).await,
                Some(SchedulesCmd::Run { name }) => schedules::run(&cfg, &name).await,
                Some(SchedulesCmd::History { name, limit, json }) => {
                    schedules::history(&cfg, &name, limit, json).await
                }
            },
            Command::Tasks(TasksCmd::Rate { task, rate }) => tasks::rate(&cfg, &task, &rate).await,
            Command::Tasks(TasksCmd::Rates { json }) => tasks::rates(&cfg, json).await,
            Command::Db(DbCmd::Reset { yes }) => jobs::reset(&cfg, yes).await,
            Command::Dead(DeadCmd::List { queue, json }) => {
                dead::list(&cfg, queue.as_deref(), json).await
            }
            Command::Dead(DeadCmd::Requeue { queue }) => {
                dead::requeue(&cfg, queue.as_deref()).await
            }
            Command::Web(args) => crate::web::run(&cfg, &args).await,
            Command::Mq(cmd) => match cmd {
                MqCmd::Start => mq::start(&cfg).await,
                MqCmd::Stop => mq::stop().await,
                MqCmd::Status { json } => mq::status(&cfg, json).await,
                MqCmd::Setup => mq::setup(&cfg).await,
            },
            Command::Logs(args) => logs::show(&cfg, &args).await,
            Command::Completions { .. } | Command::Man { .. } => unreachable!("handled above"),
            Command::Worker { .. } => unreachable!("handled above"),
        }
    })
}
