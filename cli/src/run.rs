//! The shell of the plugin: reads files and standard input, asks [`crate::cluster`] for objects,
//! calls the pure modules and prints. Exit codes: 0 fine, 1 a check found an error.

use std::io::Read as _;
use std::net::IpAddr;
use std::path::Path;

use anyhow::{Context as _, bail};
use serde_json::{Value, json};

use crate::args::{
    Cli, Command, DoctorArgs, K3sArgs, MetallbArgs, Migrate, Output, StatusArgs, TraceArgs,
};
use crate::cluster::{self, Scope};
use crate::findings::{self, Finding, Severity};
use crate::migrate::{k3s, metallb};
use crate::rules::{self, Proto, Ruleset};
use crate::walk::{self, Origin, Packet, WalkOptions};
use crate::{doctor, service, status};

/// Writes to standard output. A reader that went away (`| head`) ends the program quietly, as
/// for any Unix tool, instead of a panic.
fn write_out(args: std::fmt::Arguments<'_>) {
    use std::io::Write as _;
    let mut o = std::io::stdout().lock();
    if let Err(e) = o.write_fmt(args)
        && e.kind() == std::io::ErrorKind::BrokenPipe
    {
        std::process::exit(0);
    }
}

/// Writes to standard error; failures are ignored (nowhere left to report them).
fn write_err(args: std::fmt::Arguments<'_>) {
    use std::io::Write as _;
    let _ = std::io::stderr().lock().write_fmt(args);
}

macro_rules! out {
    ($($t:tt)*) => { write_out(format_args!($($t)*)) };
}
macro_rules! outln {
    () => { write_out(format_args!("\n")) };
    ($($t:tt)*) => {{ write_out(format_args!($($t)*)); write_out(format_args!("\n")) }};
}
macro_rules! err {
    ($($t:tt)*) => { write_err(format_args!($($t)*)) };
}
macro_rules! errln {
    ($($t:tt)*) => {{ write_err(format_args!($($t)*)); write_err(format_args!("\n")) }};
}

/// Runs a command; returns the exit code.
pub async fn run(cli: Cli) -> anyhow::Result<i32> {
    match cli.command {
        Command::Trace(t) => trace(t).await,
        Command::Status(a) => status_cmd(a).await,
        Command::Doctor(a) => doctor_cmd(a).await,
        Command::Migrate(Migrate::Metallb(a)) => migrate_metallb(a).await,
        Command::Migrate(Migrate::K3sServicelb(a)) => migrate_k3s(a).await,
    }
}

fn exit_code(fs: &[Finding]) -> i32 {
    i32::from(findings::worst(fs) >= Severity::Error)
}

/// Reads a file, or standard input for `-`, up to [`rules::MAX_INPUT_BYTES`].
pub fn read_input(path: &Path) -> anyhow::Result<String> {
    let mut b = Vec::new();
    if path == Path::new("-") {
        std::io::stdin()
            .take(rules::MAX_INPUT_BYTES as u64 + 1)
            .read_to_end(&mut b)
            .context("reading standard input")?;
    } else {
        let f = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
        f.take(rules::MAX_INPUT_BYTES as u64 + 1)
            .read_to_end(&mut b)
            .with_context(|| format!("reading {}", path.display()))?;
    }
    // Rules pasted through mail or tickets may carry a stray non-UTF-8 byte (a Latin-1 comment):
    // it becomes U+FFFD instead of refusing the whole input.
    Ok(String::from_utf8(b).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned()))
}

fn parse_from(t: &TraceArgs) -> anyhow::Result<Option<IpAddr>> {
    t.from
        .as_deref()
        .map(|f| {
            f.parse()
                .with_context(|| format!("--from {f:?} is not an IP address"))
        })
        .transpose()
}

fn packet(t: &TraceArgs, dst: IpAddr, port: u16, proto: Proto) -> anyhow::Result<Packet> {
    Ok(Packet {
        dst,
        port,
        proto,
        src: parse_from(t)?,
        origin: if t.from_node {
            Origin::Node
        } else {
            Origin::Outside
        },
        dst_local: t.dst_local,
    })
}

fn rule_issues(rs: &Ruleset) -> Vec<Finding> {
    rs.issues
        .iter()
        .map(|i| {
            Finding::new(
                Severity::Warning,
                "rules-not-understood",
                format!("line {}: {}", i.line, i.message),
            )
        })
        .collect()
}

fn print_findings(title: &str, fs: &[Finding]) {
    if fs.is_empty() {
        return;
    }
    outln!("\n{title}:");
    for f in fs {
        out!("{}", f.render("  "));
    }
}

/// `svc/NAME`, `service/NAME`, `services/NAME` or `NAME`.
fn service_name(s: &str) -> &str {
    s.split_once('/')
        .filter(|(k, _)| matches!(*k, "svc" | "service" | "services"))
        .map_or(s, |(_, n)| n)
}

async fn trace(t: TraceArgs) -> anyhow::Result<i32> {
    let Some(svc_arg) = t.service.as_deref() else {
        return trace_offline(&t);
    };
    let name = service_name(svc_arg).to_string();
    let client = cluster::client().await?;
    let ns = t
        .namespace
        .clone()
        .unwrap_or_else(|| client.default_namespace().to_string());
    let snap = cluster::snapshot(
        &client,
        &Scope::Service {
            namespace: ns.clone(),
            name: name.clone(),
        },
    )
    .await?;
    let Some(report) = service::report(&snap, &ns, &name, t.port.as_deref()) else {
        bail!("Service {ns}/{name} not found");
    };
    let mut all: Vec<Finding> = report.steps.clone();
    let mut traces = Vec::new();
    let mut rule_findings = Vec::new();
    if let Some(path) = &t.rules {
        let rs = rules::parse(&read_input(path)?)?;
        rule_findings = rule_issues(&rs);
        let opts = service::RulesOptions {
            from: parse_from(&t)?,
            from_node: t.from_node,
            dst_local: t.dst_local,
            node: t.node.clone(),
            chain: t.chain.clone(),
        };
        traces = service::walk_rules(&snap, &report, &rs, &opts);
        for tr in &traces {
            all.extend(tr.findings.iter().cloned());
        }
    }
    match t.output {
        Output::Json => {
            outln!(
                "{}",
                serde_json::to_string_pretty(&json!({
                    "service": report,
                    "rules": traces,
                    "input": rule_findings,
                    "gaps": snap.gaps,
                }))?
            );
        }
        Output::Text => {
            out!("{}", service::text(&report));
            for tr in &traces {
                match (&tr.node, &t.node) {
                    (Some(n), Some(_)) => outln!("\nThrough {n}'s rules to {}:", tr.destination),
                    (Some(n), None) => outln!(
                        "\nThrough the rules to {}, read as {n}'s (the node the traffic reaches; --node if they come from another):",
                        tr.destination
                    ),
                    (None, _) => outln!("\nThrough the node's rules to {}:", tr.destination),
                }
                if let Some(e) = &tr.error {
                    outln!("  {e}");
                }
                if let Some(w) = &tr.trace {
                    out!("{}", walk::render::text(w));
                }
                print_findings("Checked against the EndpointSlices", &tr.findings);
            }
            print_findings("Input", &rule_findings);
            for g in &snap.gaps {
                outln!("note: could not read {g}");
            }
            if t.rules.is_none() && !report.ips.is_empty() {
                outln!(
                    "\nTo follow the packet through kube-proxy on {}: run `iptables-save` (or `nft -j list ruleset`) there and pass it with --rules FILE, or pipe it: ssh NODE sudo iptables-save | kubectl ferrolb trace svc/{name} -n {} --rules -",
                    report
                        .announcers
                        .first()
                        .or(report.advertisers.first())
                        .or(report.published_nodes.first())
                        .map_or("the announcing node", String::as_str),
                    ns
                );
            }
        }
    }
    all.extend(rule_findings);
    Ok(exit_code(&all))
}

fn trace_offline(t: &TraceArgs) -> anyhow::Result<i32> {
    let (Some(rules_path), Some(to)) = (&t.rules, &t.to) else {
        bail!("without a Service, trace needs --rules FILE and --to IP:PORT[/PROTO]");
    };
    let rs = rules::parse(&read_input(rules_path)?)?;
    let (dst, port, proto) = walk::parse_destination(to)?;
    let pkt = packet(t, dst, port, proto)?;
    let trace = walk::walk(
        &rs,
        &pkt,
        &WalkOptions {
            chain: t.chain.clone(),
        },
    )?;
    let fs = rule_issues(&rs);
    let mut checked = Vec::new();
    if let Some(path) = &t.endpoints {
        let slices: Vec<k8s_openapi::api::discovery::v1::EndpointSlice> =
            metallb::flatten(yaml_docs(path)?)
                .into_iter()
                .filter(|o| o.get("kind").and_then(Value::as_str) == Some("EndpointSlice"))
                .filter_map(|o| serde_json::from_value(o).ok())
                .collect();
        if slices.is_empty() {
            bail!("{} holds no EndpointSlice", path.display());
        }
        let refs: Vec<&_> = slices.iter().collect();
        let eps: Vec<_> = crate::snapshot::slice_endpoints(&refs, t.port.as_deref())
            .into_iter()
            .filter(|e| rules::Family::of(&e.ip) == rules::Family::of(&dst))
            .filter(|e| t.node.as_ref().is_none_or(|n| e.node.as_ref() == Some(n)))
            .collect();
        checked = walk::check::cross_check(&trace, &eps);
    }
    match t.output {
        Output::Json => {
            let v = json!({
                "rules": {"format": rs.format, "issues": rs.issues},
                "trace": trace,
                "endpoints": checked,
                "findings": fs,
            });
            outln!("{}", serde_json::to_string_pretty(&v)?);
        }
        Output::Text => {
            outln!(
                "Rules: {} ({} rules)",
                rs.format.describe(),
                rs.rule_count()
            );
            out!("{}", walk::render::text(&trace));
            print_findings("Checked against the EndpointSlices", &checked);
            print_findings("Input", &fs);
        }
    }
    Ok(exit_code(&checked))
}

async fn status_cmd(a: StatusArgs) -> anyhow::Result<i32> {
    let client = cluster::client().await?;
    let mut snap = cluster::snapshot(&client, &Scope::All).await?;
    cluster::speaker_metrics(&client, &mut snap).await;
    let st = status::build(&snap);
    match a.output {
        Output::Json => outln!("{}", serde_json::to_string_pretty(&st)?),
        Output::Text => out!("{}", status::text(&st)),
    }
    Ok(0)
}

async fn doctor_cmd(a: DoctorArgs) -> anyhow::Result<i32> {
    let client = cluster::client().await?;
    let snap = cluster::snapshot(&client, &Scope::All).await?;
    let fs = doctor::run(&snap);
    match a.output {
        Output::Json => outln!("{}", serde_json::to_string_pretty(&fs)?),
        Output::Text => {
            for f in &fs {
                out!("{}", f.render(""));
            }
            let bad = fs
                .iter()
                .filter(|f| f.severity >= Severity::Warning)
                .count();
            outln!(
                "\n{} checks, {}",
                fs.len(),
                if bad == 0 {
                    "nothing wrong found".to_string()
                } else {
                    format!("{bad} to look at")
                }
            );
        }
    }
    Ok(exit_code(&fs))
}

/// YAML documents from a file (or `-`), as JSON values.
fn yaml_docs(path: &Path) -> anyhow::Result<Vec<Value>> {
    let text = read_input(path)?;
    let mut out = Vec::new();
    for d in serde_yaml::Deserializer::from_str(&text) {
        let v = <Value as serde::Deserialize>::deserialize(d)
            .with_context(|| format!("{} is not YAML", path.display()))?;
        if !v.is_null() {
            out.push(v);
        }
    }
    Ok(out)
}

fn print_notes(notes: &[Finding]) {
    for n in notes {
        err!("{}", n.render("# "));
    }
}

async fn apply_all(objs: &[Value]) -> anyhow::Result<i32> {
    let client = cluster::client().await?;
    let mut failed = false;
    for r in cluster::apply(&client, objs).await {
        match r {
            Ok(l) => errln!("{l}"),
            Err(l) => {
                failed = true;
                errln!("{l}");
            }
        }
    }
    Ok(i32::from(failed))
}

async fn migrate_metallb(a: MetallbArgs) -> anyhow::Result<i32> {
    let mut objs = Vec::new();
    let mut gaps = Vec::new();
    if a.from_cluster {
        let client = cluster::client().await?;
        let (o, g) = cluster::metallb_objects(&client, &a.metallb_namespace).await;
        objs = o;
        gaps = g;
    } else if a.files.is_empty() {
        bail!("pass --from-cluster, or -f FILE... with MetalLB's objects");
    } else {
        for f in &a.files {
            objs.extend(yaml_docs(f)?);
        }
    }
    let c = metallb::convert(&metallb::flatten(objs), &a.metallb_namespace);
    out!("{}", metallb::yaml(&c.objects));
    for g in &gaps {
        errln!("# note: could not read {g}");
    }
    print_notes(&c.notes);
    if c.objects.is_empty() {
        errln!("# no MetalLB object found to convert");
    }
    let mut code = exit_code(&c.notes);
    if a.apply {
        code = code.max(apply_all(&c.objects).await?);
    } else if !c.objects.is_empty() {
        errln!(
            "# nothing was changed in the cluster; rerun with --apply, or pipe the YAML to kubectl apply -f -"
        );
    }
    Ok(code)
}

async fn migrate_k3s(a: K3sArgs) -> anyhow::Result<i32> {
    let nodes: Vec<k8s_openapi::api::core::v1::Node> = if a.from_cluster {
        let client = cluster::client().await?;
        cluster::nodes(&client).await?
    } else if a.files.is_empty() {
        bail!("pass --from-cluster, or -f FILE... with the Nodes (kubectl get nodes -o yaml)");
    } else {
        let mut v = Vec::new();
        for f in &a.files {
            v.extend(yaml_docs(f)?);
        }
        metallb::flatten(v)
            .into_iter()
            .filter(|o| o.get("kind").and_then(Value::as_str) == Some("Node"))
            .filter_map(|o| serde_json::from_value(o).ok())
            .collect()
    };
    let c = k3s::convert(&nodes, &a.pool_name);
    out!("{}", metallb::yaml(&c.objects));
    print_notes(&c.notes);
    errln!("# Steps to move from servicelb:");
    for (i, s) in k3s::STEPS.iter().enumerate() {
        errln!("#   {}. {s}", i + 1);
    }
    if a.apply {
        return apply_all(&c.objects).await;
    }
    errln!(
        "# nothing was changed in the cluster; rerun with --apply, or pipe the YAML to kubectl apply -f -"
    );
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn service_names_in_kubectl_forms() {
        assert_eq!(service_name("svc/web"), "web");
        assert_eq!(service_name("service/web"), "web");
        assert_eq!(service_name("web"), "web");
        assert_eq!(service_name("deploy/web"), "deploy/web");
    }
}
