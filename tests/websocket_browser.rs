//! A real browser: headless Chromium (Debian's), driven by playwright-core,
//! loads a page from an allowed origin that opens a WebSocket to junctiond,
//! authenticates with `rpc.auth`, subscribes to a topic and provides a
//! method; a `junction call` reaches the page's method and a `junction
//! publish` its subscription, and the test reads both back from the DOM.
//! The same page from an origin that is not allowed gets nothing. Leaves a
//! screenshot in target/browser-websocket.png (docs/remote-browser.png).

mod common;

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::process::Command;

use junction::access::{AuthToken, NamedToken};
use junction::policy::{Policy, Rule};
use serde_json::Value;

const TOKEN: &str = "page-secret-page-secret-page";

/// The page: everything it learns goes into the DOM.
fn page(daemon: &str) -> String {
    format!(
        r#"<!doctype html>
<html><head><meta charset="utf-8"><title>Junction from a browser</title>
<style>body {{ font: 15px sans-serif; margin: 2em; }} li {{ margin: .3em 0; }}
#status {{ font-weight: bold; }} .event {{ color: #05c; }} .call {{ color: #080; }}</style></head>
<body><h1>Junction over WebSocket</h1><p>status: <span id="status">connecting</span></p><ul id="log"></ul>
<script>
const log = (cls, text) => {{ const li = document.createElement("li"); li.className = cls; li.textContent = text;
  document.getElementById("log").append(li); }};
const status = (text) => document.getElementById("status").textContent = text;
const ws = new WebSocket("ws://{daemon}/");
const send = (m) => ws.send(JSON.stringify(m));
let answered = 0;
ws.onopen = () => {{
  send({{ jsonrpc: "2.0", method: "rpc.auth", params: {{ token: "{TOKEN}" }}, id: 1 }});
  send({{ jsonrpc: "2.0", method: "bus.subscribe", params: {{ topics: ["page.news.*"] }}, id: 2 }});
  send({{ jsonrpc: "2.0", method: "bus.register", params: {{ names: ["page.hello"] }}, id: 3 }});
}};
ws.onmessage = (e) => {{
  const m = JSON.parse(e.data);
  if (m.method === "bus.event") {{
    log("event", `event ${{m.params.topic}} ${{JSON.stringify(m.params.data)}}`);
  }} else if (m.method === "page.hello") {{
    log("call", `call page.hello from ${{m.params[0]}}`);
    send({{ jsonrpc: "2.0", id: m.id, result: `hello ${{m.params[0]}}, from the page` }});
  }} else if (m.error) {{
    log("error", `error ${{JSON.stringify(m.error)}}`); status("failed");
  }} else if (++answered === 3) {{
    log("ready", "authenticated, subscribed to page.news.*, providing page.hello"); status("ready");
  }}
}};
ws.onerror = () => status("refused");
</script></body></html>"#
    )
}

/// Serves `html` to every request on `listener`, on a thread.
fn serve(listener: TcpListener, html: String) {
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let mut reader = BufReader::new(&stream);
            let mut line = String::new();
            while reader.read_line(&mut line).is_ok_and(|n| n > 2) {
                line.clear();
            }
            let _ = write!(
                &stream,
                "HTTP/1.1 200 OK\r\nContent-Type: text/html; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{html}",
                html.len()
            );
        }
    });
}

const DRIVER: &str = r##"
const { chromium } = require("playwright-core");
const { execFileSync } = require("child_process");
const [allowed, refused, junction, unix, shot] = process.argv.slice(1);
(async () => {
  const browser = await chromium.launch({ executablePath: "/usr/bin/chromium", args: [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync"] });
  const report = {};
  try {
    const page = await browser.newPage({ viewport: { width: 900, height: 420 } });
    await page.goto(allowed);
    await page.waitForFunction(() => ["ready", "failed", "refused"].includes(document.getElementById("status").textContent), null, { timeout: 20000 });
    report.status = await page.textContent("#status");
    report.cli = execFileSync(junction, ["--unix", unix, "call", "page.hello", '["the CLI"]'], { timeout: 20000 }).toString();
    for (const n of [1, 2]) {
      execFileSync(junction, ["--unix", unix, "publish", "page.news.build", JSON.stringify({ n })], { timeout: 20000 });
    }
    await page.waitForFunction(() => document.querySelectorAll(".event").length === 2, null, { timeout: 20000 });
    report.log = await page.$$eval("#log li", (items) => items.map((li) => `${li.className}: ${li.textContent}`));
    await page.screenshot({ path: shot });
    const other = await browser.newPage();
    await other.goto(refused);
    await other.waitForFunction(() => document.getElementById("status").textContent !== "connecting", null, { timeout: 20000 });
    report.other = await other.textContent("#status");
  } finally {
    await browser.close();
  }
  console.log(JSON.stringify(report));
})().catch((e) => { console.error(String(e)); process.exit(1); });
"##;

#[test]
fn a_chromium_page_subscribes_and_provides_a_method_a_cli_call_reaches() {
    let Some(modules) = common::ci_node_modules(&["playwright-core"]) else {
        return;
    };
    let (Some(node), Some(_chromium)) = (
        common::external_command("node"),
        common::external_command("chromium"),
    ) else {
        return;
    };
    let allowed = TcpListener::bind("127.0.0.1:0").expect("page listener");
    let refused = TcpListener::bind("127.0.0.1:0").expect("second page listener");
    let origin = format!("http://127.0.0.1:{}", allowed.local_addr().unwrap().port());
    let server = common::start_with(|c| {
        c.access = junction::access::Access {
            tokens: vec![NamedToken {
                name: "page".into(),
                token: AuthToken::new(TOKEN),
            }],
            policy: Policy::new(
                [
                    "token:page:call:*",
                    "token:page:provide:page.*",
                    "token:page:subscribe:page.*",
                ]
                .iter()
                .map(|r| Rule::from_flag(r, false).expect("rule"))
                .collect(),
            ),
            ..junction::access::Access::default()
        };
        c.access.http = junction::http::HttpAccess::resolve(Some(vec![origin.clone()]), None, None);
    });
    let daemon = server.running.tcp_addr().expect("tcp").to_string();
    let unix = server
        .running
        .unix_path()
        .expect("unix")
        .to_str()
        .unwrap()
        .to_string();
    let refused_url = format!("http://127.0.0.1:{}/", refused.local_addr().unwrap().port());
    serve(allowed, page(&daemon));
    serve(refused, page(&daemon));
    let shot =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/browser-websocket.png");
    let out = Command::new(node)
        .env("NODE_PATH", &modules)
        .args([
            "-e",
            DRIVER,
            &format!("{origin}/"),
            &refused_url,
            env!("CARGO_BIN_EXE_junction"),
            &unix,
            shot.to_str().unwrap(),
        ])
        .output()
        .expect("node runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: Value = serde_json::from_slice(&out.stdout).expect("JSON report");
    assert_eq!(report["status"], "ready", "{report}");
    assert_eq!(
        report["cli"].as_str().unwrap().trim(),
        "\"hello the CLI, from the page\""
    );
    let log: Vec<&str> = report["log"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(
        log.contains(&"call: call page.hello from the CLI"),
        "{log:?}"
    );
    assert!(
        log.contains(&"event: event page.news.build {\"n\":1}"),
        "{log:?}"
    );
    assert!(
        log.contains(&"event: event page.news.build {\"n\":2}"),
        "{log:?}"
    );
    assert_eq!(
        report["other"], "refused",
        "a page from another origin gets nothing"
    );
    assert!(shot.is_file());
    let stats = server.stats();
    assert_eq!(stats["http"]["refused_origin"], 1, "{stats}");
}
