//! The shell of the plugin: reads files and standard input, talks to the cluster, prints. Every
//! decision is made by the pure modules it calls.

use std::io::Read as _;
use std::path::Path;

use anyhow::{Context as _, bail};

use crate::args::{Cli, Command, Output, TraceArgs};
use crate::findings::{self, Severity};
use crate::rules;
use crate::walk::{self, Origin, Packet, WalkOptions};

/// Runs a command; returns the exit code (1 when a check found an error).
pub async fn run(cli: Cli) -> anyhow::Result<i32> {
    match cli.command {
        Command::Trace(t) => trace(t).await,
        Command::Status(_) | Command::Doctor(_) | Command::Migrate(_) => {
            bail!("not built yet")
        }
    }
}

/// Reads a file, or standard input for `-`.
pub fn read_input(path: &Path) -> anyhow::Result<String> {
    let mut s = String::new();
    if path == Path::new("-") {
        std::io::stdin()
            .take(rules::MAX_INPUT_BYTES as u64 + 1)
            .read_to_string(&mut s)
            .context("reading standard input")?;
    } else {
        let f = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
        f.take(rules::MAX_INPUT_BYTES as u64 + 1)
            .read_to_string(&mut s)
            .with_context(|| format!("reading {}", path.display()))?;
    }
    Ok(s)
}

fn packet_options(t: &TraceArgs) -> anyhow::Result<(Option<std::net::IpAddr>, Origin)> {
    let from = match &t.from {
        Some(f) => Some(
            f.parse()
                .with_context(|| format!("--from {f:?} is not an IP address"))?,
        ),
        None => None,
    };
    let origin = if t.from_node {
        Origin::Node
    } else {
        Origin::Outside
    };
    Ok((from, origin))
}

async fn trace(t: TraceArgs) -> anyhow::Result<i32> {
    if t.service.is_none() {
        let (Some(rules_path), Some(to)) = (&t.rules, &t.to) else {
            bail!("without a Service, trace needs --rules FILE and --to IP:PORT[/PROTO]");
        };
        let text = read_input(rules_path)?;
        let rs = rules::parse(&text)?;
        let (dst, port, proto) = walk::parse_destination(to)?;
        let (src, origin) = packet_options(&t)?;
        let packet = Packet {
            dst,
            port,
            proto,
            src,
            origin,
            dst_local: t.dst_local,
        };
        let opts = WalkOptions {
            chain: t.chain.clone(),
        };
        let trace = walk::walk(&rs, &packet, &opts)?;
        let mut fs = Vec::new();
        for i in &rs.issues {
            fs.push(findings::Finding::new(
                Severity::Warning,
                "rules-not-understood",
                format!("line {}: {}", i.line, i.message),
            ));
        }
        match t.output {
            Output::Json => {
                let v = serde_json::json!({
                    "rules": {"format": rs.format, "issues": rs.issues},
                    "trace": trace,
                    "findings": fs,
                });
                println!("{}", serde_json::to_string_pretty(&v)?);
            }
            Output::Text => {
                println!(
                    "Rules: {} ({} rules)",
                    rs.format.describe(),
                    rs.rule_count()
                );
                print!("{}", walk::render::text(&trace));
                if !fs.is_empty() {
                    println!("\nInput:");
                    for f in &fs {
                        print!("{}", f.render("  "));
                    }
                }
            }
        }
        return Ok(0);
    }
    bail!("not built yet")
}
