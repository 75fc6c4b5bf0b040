//! `meshctl proxy-status`: istioctl's proxy-status for a mesh on one machine. One line per
//! proxy (name, namespace, sidecar, gateway or embedded, the config generation in force and
//! when it loaded, its version, whether that is the latest, errors), read from each proxy's
//! admin `/server_info`. The proxies are the running `bookinfo up`'s (its state directory's
//! `proxies.json`) or the `--admin` addresses given. "The latest" is the version of what the
//! config directory holds now, loaded here as the proxies load it: a proxy that has not
//! reloaded yet, or whose reload failed, is STALE.

use std::{
    path::{Path, PathBuf},
    process::ExitCode,
    time::Duration,
};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Limited};
use serde_json::{Value, json};

/// How long one proxy may take to answer.
const TIMEOUT: Duration = Duration::from_secs(3);
/// The most of a `/server_info` answer read (its errors are the config's findings).
const MAX_ANSWER: usize = 1 << 20;

/// Flags of `meshctl proxy-status`.
#[derive(Debug, clap::Args)]
pub(crate) struct ProxyStatusArgs {
    /// The state directory of a running `bookinfo up` (its `proxies.json` lists the proxies).
    #[arg(long, value_name = "DIR", default_value = ".mesh")]
    state_dir: PathBuf,
    /// A proxy's admin address instead (repeatable).
    #[arg(long = "admin", value_name = "ADDR")]
    admin: Vec<String>,
    /// The config the proxies should be running, for SYNCED or STALE (by default the one
    /// `bookinfo up` serves, from its state directory).
    #[arg(long, value_name = "DIR")]
    config_dir: Option<PathBuf>,
    /// Namespace of resources that name none (as the proxies were started with).
    #[arg(short, long, default_value = "default")]
    namespace: String,
    /// `table` or `json`.
    #[arg(short, long, value_name = "FORMAT", default_value = "table")]
    output: String,
}

/// A proxy to ask: where, and what the list says it is (for one that does not answer).
#[derive(Clone, Debug, PartialEq)]
struct Proxy {
    name: String,
    namespace: String,
    kind: String,
    admin: String,
}

/// One line of the answer.
#[derive(Clone, Debug, PartialEq)]
struct Row {
    proxy: Proxy,
    state: String,
    generation: Option<u64>,
    version: Option<String>,
    loaded_at: Option<String>,
    sync: &'static str,
    errors: Vec<String>,
    unreachable: Option<String>,
}

pub(crate) fn run(args: &ProxyStatusArgs) -> ExitCode {
    if args.output != "table" && args.output != "json" {
        eprintln!("-o {}: the formats are table and json", args.output);
        return ExitCode::from(2);
    }
    let (proxies, recorded_config) = match proxies(args) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::FAILURE;
        }
    };
    let config_dir = args.config_dir.clone().or(recorded_config);
    let latest = match &config_dir {
        Some(dir) => match crate::args::load_snapshot(std::slice::from_ref(dir), false, &args.namespace) {
            Ok(s) => Some(s.version()),
            Err(e) => {
                eprintln!("{}: {e}; the proxies keep the last good config, so none is the latest", dir.display());
                None
            }
        },
        None => None,
    };
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let answers = runtime.block_on(async {
        let asks: Vec<_> = proxies.iter().map(|p| tokio::spawn(server_info(p.admin.clone()))).collect();
        let mut out = Vec::with_capacity(asks.len());
        for a in asks {
            out.push(a.await.unwrap_or_else(|e| Err(e.to_string())));
        }
        out
    });
    let rows: Vec<Row> = proxies.into_iter().zip(answers).map(|(p, a)| row(p, a, latest.as_deref())).collect();
    if args.output == "json" {
        let doc = json!({
            "config_dir": config_dir,
            "latest_version": latest,
            "proxies": rows.iter().map(row_json).collect::<Vec<_>>(),
        });
        println!("{}", serde_json::to_string_pretty(&doc).unwrap_or_default());
    } else {
        print!("{}", table(&rows));
    }
    if rows.iter().any(|r| r.unreachable.is_some()) { ExitCode::FAILURE } else { ExitCode::SUCCESS }
}

/// The proxies to ask, and the config directory their list records.
fn proxies(args: &ProxyStatusArgs) -> Result<(Vec<Proxy>, Option<PathBuf>), String> {
    if !args.admin.is_empty() {
        let list = args
            .admin
            .iter()
            .map(|a| Proxy { name: String::new(), namespace: String::new(), kind: String::new(), admin: a.clone() })
            .collect();
        return Ok((list, None));
    }
    let file = args.state_dir.join("proxies.json");
    let text = std::fs::read_to_string(&file).map_err(|e| {
        format!(
            "{}: {e}: no running mesh there (`bookinfo up` writes it); give --state-dir DIR or --admin ADDR",
            file.display()
        )
    })?;
    parse_state(&file, &text)
}

/// `proxies.json` as `bookinfo up` writes it.
fn parse_state(file: &Path, text: &str) -> Result<(Vec<Proxy>, Option<PathBuf>), String> {
    let doc: Value = serde_json::from_str(text).map_err(|e| format!("{}:{}: {e}", file.display(), e.line()))?;
    let Some(list) = doc["proxies"].as_array() else {
        return Err(format!("{}: `proxies` is not a list", file.display()));
    };
    let mut out = Vec::with_capacity(list.len());
    for (i, p) in list.iter().enumerate() {
        let field = |f: &str| p[f].as_str().map(str::to_string);
        let Some(admin) = field("admin") else {
            return Err(format!("{}: proxies[{i}].admin is missing", file.display()));
        };
        out.push(Proxy {
            name: field("name").unwrap_or_default(),
            namespace: field("namespace").unwrap_or_default(),
            kind: field("type").unwrap_or_default(),
            admin,
        });
    }
    Ok((out, doc["config_dir"].as_str().map(PathBuf::from)))
}

/// `GET /server_info` from one admin address.
async fn server_info(addr: String) -> Result<Value, String> {
    let ask = async {
        let stream = tokio::net::TcpStream::connect(&addr).await.map_err(|e| e.to_string())?;
        let (mut send, conn) =
            hyper::client::conn::http1::handshake::<_, Empty<Bytes>>(hyper_util::rt::TokioIo::new(stream))
                .await
                .map_err(|e| e.to_string())?;
        tokio::spawn(conn);
        let req = http::Request::get("/server_info")
            .header(http::header::HOST, &addr)
            .body(Empty::new())
            .map_err(|e| e.to_string())?;
        let rsp = send.send_request(req).await.map_err(|e| e.to_string())?;
        let status = rsp.status();
        let body = Limited::new(rsp.into_body(), MAX_ANSWER).collect().await.map_err(|e| e.to_string())?.to_bytes();
        if !status.is_success() {
            return Err(format!("/server_info answered {status} (an admin endpoint of an older mesh?)"));
        }
        serde_json::from_slice::<Value>(&body).map_err(|e| format!("/server_info: {e}"))
    };
    tokio::time::timeout(TIMEOUT, ask).await.unwrap_or_else(|_| Err(format!("no answer within {TIMEOUT:?}")))
}

/// One proxy's line from its answer, against the latest version.
fn row(mut proxy: Proxy, answer: Result<Value, String>, latest: Option<&str>) -> Row {
    match answer {
        Err(e) => Row {
            proxy,
            state: "UNREACHABLE".into(),
            generation: None,
            version: None,
            loaded_at: None,
            sync: "-",
            errors: Vec::new(),
            unreachable: Some(e),
        },
        Ok(info) => {
            // What the proxy says of itself wins over the list.
            for (field, key) in
                [(&mut proxy.name, "name"), (&mut proxy.namespace, "namespace"), (&mut proxy.kind, "type")]
            {
                if let Some(v) = info[key].as_str() {
                    *field = v.to_string();
                }
            }
            let config = &info["config"];
            let version = config["version"].as_str().map(str::to_string);
            let sync = match (latest, &version) {
                (Some(l), Some(v)) if l == v => "SYNCED",
                (Some(_), _) => "STALE",
                (None, _) => "-",
            };
            Row {
                proxy,
                state: info["state"].as_str().unwrap_or("-").to_string(),
                generation: config["generation"].as_u64(),
                version,
                loaded_at: config["loaded_at"].as_str().map(str::to_string),
                sync,
                errors: config["errors"]
                    .as_array()
                    .map(|e| e.iter().filter_map(|x| x.as_str().map(str::to_string)).collect())
                    .unwrap_or_default(),
                unreachable: None,
            }
        }
    }
}

fn row_json(r: &Row) -> Value {
    json!({
        "name": r.proxy.name,
        "namespace": r.proxy.namespace,
        "type": r.proxy.kind,
        "admin": r.proxy.admin,
        "state": r.state,
        "generation": r.generation,
        "loaded_at": r.loaded_at,
        "version": r.version,
        "sync": r.sync,
        "errors": r.errors,
        "unreachable": r.unreachable,
    })
}

/// The table, then each proxy's errors (its last reload's findings: the config in force is
/// the last good one) and why a proxy did not answer.
/// The longest cell of the table: a proxy's answer is not trusted to be short.
const MAX_CELL: usize = 80;

/// Text from a proxy's answer as it may reach a terminal: control characters (an escape
/// sequence that would recolour or clear the screen) written escaped.
fn printable(s: &str) -> String {
    s.chars().map(|c| if c.is_control() { c.escape_default().to_string() } else { c.to_string() }).collect()
}

/// [`printable`], and cut to [`MAX_CELL`] characters (the JSON output has it whole).
fn cell(s: &str) -> String {
    let p = printable(s);
    match p.char_indices().nth(MAX_CELL) {
        Some((at, _)) => format!("{}…", &p[..at]),
        None => p,
    }
}

fn table(rows: &[Row]) -> String {
    let dash = |s: &str| if s.is_empty() { "-".to_string() } else { cell(s) };
    let mut cells = vec![
        ["NAME", "NAMESPACE", "TYPE", "ADMIN", "STATE", "GENERATION", "LOADED", "VERSION", "SYNC", "ERRORS"]
            .map(String::from),
    ];
    for r in rows {
        cells.push([
            dash(&r.proxy.name),
            dash(&r.proxy.namespace),
            dash(&r.proxy.kind),
            cell(&r.proxy.admin),
            dash(&r.state),
            r.generation.map_or("-".into(), |g| g.to_string()),
            r.loaded_at.as_deref().map_or("-".into(), cell),
            r.version.as_deref().map_or("-".into(), cell),
            r.sync.to_string(),
            r.errors.len().to_string(),
        ]);
    }
    let widths: Vec<usize> =
        (0..10).map(|c| cells.iter().map(|row| row[c].chars().count()).max().unwrap_or(0)).collect();
    let mut out = String::new();
    for row in &cells {
        let line: Vec<String> = row.iter().zip(&widths).map(|(cell, w)| format!("{cell:<w$}")).collect();
        out.push_str(line.join("  ").trim_end());
        out.push('\n');
    }
    for r in rows {
        let who = if r.proxy.name.is_empty() {
            cell(&r.proxy.admin)
        } else {
            format!("{}.{}", cell(&r.proxy.name), cell(&r.proxy.namespace))
        };
        if let Some(e) = &r.unreachable {
            out.push_str(&format!("{who}: {}: {}\n", cell(&r.proxy.admin), printable(e)));
        }
        for e in &r.errors {
            out.push_str(&format!("{who}: {}\n", printable(e)));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn proxy(name: &str) -> Proxy {
        Proxy { name: name.into(), namespace: "default".into(), kind: "sidecar".into(), admin: "127.0.0.1:1".into() }
    }

    fn info(version: &str, errors: &[&str]) -> Value {
        json!({"name": "reviews-v1", "namespace": "default", "type": "sidecar", "state": "LIVE",
               "config": {"generation": 3, "version": version, "loaded_at": "2026-12-05T03:00:00Z", "errors": errors}})
    }

    #[test]
    fn a_proxy_is_synced_only_at_the_latest_version() {
        assert_eq!(row(proxy("a"), Ok(info("v1", &[])), Some("v1")).sync, "SYNCED");
        assert_eq!(row(proxy("a"), Ok(info("v0", &[])), Some("v1")).sync, "STALE");
        // No reference (the directory does not load): neither.
        assert_eq!(row(proxy("a"), Ok(info("v0", &[])), None).sync, "-");
    }

    #[test]
    fn the_proxy_names_itself_and_its_errors_are_listed() {
        let r = row(proxy("from-the-list"), Ok(info("v0", &["a.yaml:3: spec.http[0]: bad"])), Some("v1"));
        assert_eq!((r.proxy.name.as_str(), r.generation, r.errors.len()), ("reviews-v1", Some(3), 1));
        let t = table(&[r]);
        let mut lines = t.lines();
        let header = lines.next().unwrap();
        assert!(header.starts_with("NAME") && header.contains("GENERATION") && header.contains("SYNC"), "{t}");
        let line = lines.next().unwrap();
        for cell in ["reviews-v1", "default", "sidecar", "LIVE", "3", "2026-12-05T03:00:00Z", "v0", "STALE", "1"] {
            assert!(line.split_whitespace().any(|c| c == cell), "{cell} missing in {line}");
        }
        assert_eq!(lines.next(), Some("reviews-v1.default: a.yaml:3: spec.http[0]: bad"));
    }

    /// What a hostile or broken admin answers reaches the terminal escaped, and no cell of
    /// the table is longer than [`MAX_CELL`].
    #[test]
    fn an_answer_cannot_write_escape_sequences_or_stretch_the_table() {
        let mut answer = info(&"v".repeat(10_000), &["\u{1b}[2Jcleared\nnext line"]);
        answer["name"] = json!("evil\u{1b}[31m");
        let t = table(&[row(proxy("x"), Ok(answer), Some("v1"))]);
        assert!(!t.contains('\u{1b}'), "{t:?}");
        assert!(t.contains("evil\\u{1b}[31m.default: \\u{1b}[2Jcleared\\nnext line\n"), "{t}");
        assert_eq!(t.lines().count(), 3, "one header, one row, one error: {t}");
        let row_line = t.lines().nth(1).unwrap();
        assert!(
            row_line.contains(&format!("{}…", "v".repeat(MAX_CELL))) && row_line.chars().count() < 400,
            "{row_line}"
        );
    }

    #[test]
    fn an_unreachable_proxy_keeps_its_listed_name_and_says_why() {
        let r = row(proxy("ratings-v1"), Err("connection refused".into()), Some("v1"));
        assert_eq!((r.state.as_str(), r.sync), ("UNREACHABLE", "-"));
        let t = table(&[r]);
        assert!(t.contains("ratings-v1.default: 127.0.0.1:1: connection refused"), "{t}");
    }

    #[test]
    fn the_state_file_names_proxies_and_the_config() {
        let text = r#"{"config_dir": "/tmp/x/config", "proxies": [
            {"name": "details-v1", "namespace": "default", "type": "sidecar", "admin": "127.0.0.1:7"}]}"#;
        let (list, dir) = parse_state(Path::new("proxies.json"), text).unwrap();
        assert_eq!(list, vec![Proxy { admin: "127.0.0.1:7".into(), ..proxy("details-v1") }]);
        assert_eq!(dir, Some(PathBuf::from("/tmp/x/config")));
        let err = parse_state(Path::new("proxies.json"), r#"{"proxies": [{"name": "x"}]}"#).unwrap_err();
        assert_eq!(err, "proxies.json: proxies[0].admin is missing");
        let err = parse_state(Path::new("proxies.json"), "{\n oops").unwrap_err();
        assert!(err.starts_with("proxies.json:2: "), "{err}");
    }
}
