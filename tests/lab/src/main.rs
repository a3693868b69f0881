//! The `ferrolb-lab` binary: `up`, `down`, `status`, `kubectl`, `exec`, `env`, `gc`, and the
//! internal `relay` used for API server access.
//!
//! Owns process setup (runtime, logging, exit codes) only; everything else is in the library.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use clap::Parser as _;
use ferrolb_lab::cli::{self, Cli, Cmd};
use ferrolb_lab::relay::{self, RelaySpec};
use ferrolb_lab::{Lab, LabOptions, state, teardown};

fn main() -> ExitCode {
    let cli = Cli::parse();
    if !matches!(cli.command, Cmd::Relay { .. }) {
        // kube_client logs every refused /readyz probe while the API server starts.
        tracing_subscriber::fmt()
            .with_writer(std::io::stderr)
            .with_env_filter(
                tracing_subscriber::EnvFilter::try_from_default_env()
                    .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,kube_client=off")),
            )
            .init();
    }
    match run(cli.command) {
        Ok(code) => ExitCode::from(u8::try_from(code).unwrap_or(1)),
        Err(e) => {
            eprintln!("ferrolb-lab: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("start tokio runtime")
}

fn run(cmd: Cmd) -> anyhow::Result<i32> {
    match cmd {
        Cmd::Up {
            nodes,
            name,
            kube_proxy,
            proxy_mode,
            no_kubelet,
            images,
            router,
        } => {
            let started = Instant::now();
            let lab = runtime()?.block_on(Lab::up(LabOptions {
                nodes: usize::from(nodes),
                kube_proxy,
                proxy_mode,
                kubelet: !no_kubelet,
                images,
                name,
                router,
            }))?;
            let id = lab.id().to_string();
            let st = lab.detach()?;
            eprintln!(
                "lab {id} is up in {:.1}s ({nodes} {} nodes{}); `ferrolb-lab down {id}` removes it",
                started.elapsed().as_secs_f64(),
                if no_kubelet { "stand-in" } else { "real" },
                if kube_proxy {
                    format!(", kube-proxy ({})", proxy_mode.as_str())
                } else {
                    String::new()
                }
            );
            println!("{}", cli::env_lines(&st));
            Ok(0)
        }
        Cmd::Down { name, all } => {
            let removed = if all {
                teardown::down_all()
                    .into_iter()
                    .map(|r| (r.id, r.report))
                    .collect()
            } else {
                let id = match name {
                    Some(n) => n,
                    None => state::resolve(None)?.id,
                };
                let report = teardown::down(&id)?;
                vec![(id, report)]
            };
            let mut code = 0;
            for (id, report) in removed {
                eprintln!(
                    "lab {id}: removed {} namespaces, killed {} processes",
                    report.namespaces.len(),
                    report.killed
                );
                for p in &report.problems {
                    eprintln!("  problem: {p}");
                    code = 1;
                }
            }
            Ok(code)
        }
        Cmd::Status => {
            print!("{}", cli::status());
            Ok(0)
        }
        Cmd::Kubectl { name, args } => {
            let st = state::resolve(name.as_deref())?;
            Ok(cli::run_inherited(&cli::kubectl_argv(&st, &args))?)
        }
        Cmd::Exec { name, host, cmd } => {
            let st = state::resolve(name.as_deref())?;
            Ok(cli::run_inherited(&cli::exec_argv(&st, &host, &cmd)?)?)
        }
        Cmd::Spawn {
            name,
            log,
            host,
            cmd,
        } => {
            let st = state::resolve(name.as_deref())?;
            let plan = ferrolb_lab::Plan::new(&st.id, st.nodes)?;
            let ns = plan.netns(&host)?;
            let path = ferrolb_lab::controlplane::Layout::new(&state::run_dir(&st.id)).log(&log);
            let child = ferrolb_lab::process::spawn_detached(Some(&ns), &cmd, &path, &[])?;
            println!("{}", child.id());
            eprintln!(
                "started in {host} (pid {}), log: {}",
                child.id(),
                path.display()
            );
            Ok(0)
        }
        Cmd::SaKubeconfig {
            name,
            namespace,
            service_account,
        } => {
            let st = state::resolve(name.as_deref())?;
            let path =
                ferrolb_lab::lab::service_account_kubeconfig(&st, &namespace, &service_account)?;
            println!("{}", path.display());
            Ok(0)
        }
        Cmd::Backend { args } => {
            let cfg = ferrolb_lab::image::backend::parse_args(&args).map_err(anyhow::Error::msg)?;
            ferrolb_lab::image::backend::serve(cfg).context("backend")?;
            Ok(0)
        }
        Cmd::Image { bin_dir, out } => {
            ferrolb_lab::image::debug_ferrolb_image(&bin_dir, env!("CARGO_PKG_VERSION"), &out)?;
            println!("{}", out.display());
            Ok(0)
        }
        Cmd::Env { name } => {
            let st = state::resolve(name.as_deref())?;
            println!("{}", cli::env_lines(&st));
            Ok(0)
        }
        Cmd::Gc => {
            let removed = teardown::gc();
            if removed.is_empty() {
                eprintln!("nothing to collect");
            }
            for r in removed {
                eprintln!(
                    "lab {}: {} — removed {} namespaces, killed {} processes",
                    r.id,
                    r.reason.map(|x| x.as_str()).unwrap_or("-"),
                    r.report.namespaces.len(),
                    r.report.killed
                );
                for p in &r.report.problems {
                    eprintln!("  problem: {p}");
                }
            }
            Ok(0)
        }
        Cmd::Relay {
            listen,
            connect,
            port_file,
            watch,
            max_lifetime_secs,
        } => {
            let spec = RelaySpec {
                listen: listen.parse()?,
                connect: connect.parse()?,
                port_file,
                watch,
                max_lifetime: Duration::from_secs(max_lifetime_secs),
            };
            runtime()?.block_on(relay::run(spec))?;
            Ok(0)
        }
    }
}
