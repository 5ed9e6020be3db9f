//! `gpu-vae view`: a run's web export (`export::web`) served on 127.0.0.1.
//!
//! The folder is exported into a temporary directory, read into memory and
//! the directory removed at once, so that stopping the server with Ctrl-C
//! leaves nothing behind. Only GET and HEAD of the exported files (and `/`
//! for index.html) are answered; the server binds the loopback address only.

use std::collections::HashMap;

use anyhow::Context;

use super::ViewArgs;
use crate::train::run_dir::RunDir;

pub fn run(args: ViewArgs) -> anyhow::Result<()> {
    let run = RunDir::open(&args.run)?;
    let files = exported_files(&run)?;
    let server = tiny_http::Server::http(("127.0.0.1", args.port))
        .map_err(|e| anyhow::anyhow!("cannot listen on 127.0.0.1:{}: {e}", args.port))?;
    let port = server.server_addr().to_ip().map(|a| a.port()).unwrap_or(args.port);
    println!("serving {} at http://127.0.0.1:{port}/ (Ctrl-C stops)", args.run.display());
    for request in server.incoming_requests() {
        let response = answer(&files, request.method(), request.url());
        // A client that went away is no reason to stop serving.
        let _ = request.respond(response);
    }
    Ok(())
}

/// The export's files by name, read back from a temporary folder that is then removed.
fn exported_files(run: &RunDir) -> anyhow::Result<HashMap<String, Vec<u8>>> {
    let dir = std::env::temp_dir().join(format!("gpu-vae-view-{}", std::process::id()));
    let result = (|| {
        let exported = crate::export::web::export(run.arch(), run.params(), Some(run), &dir)?;
        let mut files = HashMap::new();
        for path in exported.files {
            let name = path.file_name().and_then(|n| n.to_str()).context("exported file name")?.to_string();
            files.insert(name, std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?);
        }
        Ok(files)
    })();
    let _ = std::fs::remove_dir_all(&dir);
    result
}

type Response = tiny_http::Response<std::io::Cursor<Vec<u8>>>;

fn answer(files: &HashMap<String, Vec<u8>>, method: &tiny_http::Method, url: &str) -> Response {
    let text = |code: u16, body: &str| {
        tiny_http::Response::from_string(body).with_status_code(code).with_header(header("text/plain; charset=utf-8"))
    };
    if !matches!(method, tiny_http::Method::Get | tiny_http::Method::Head) {
        return text(405, "only GET and HEAD\n");
    }
    let path = url.split(['?', '#']).next().unwrap_or("/");
    let name = match path.trim_start_matches('/') {
        "" => "index.html",
        name => name,
    };
    match files.get(name) {
        Some(bytes) => tiny_http::Response::from_data(bytes.clone()).with_header(header(content_type(name))),
        None => text(404, "not found\n"),
    }
}

fn header(value: &str) -> tiny_http::Header {
    tiny_http::Header::from_bytes(&b"Content-Type"[..], value.as_bytes()).expect("a valid header")
}

fn content_type(name: &str) -> &'static str {
    match name.rsplit('.').next() {
        Some("html") => "text/html; charset=utf-8",
        Some("js") => "text/javascript; charset=utf-8",
        Some("json") => "application/json",
        Some("csv") => "text/csv; charset=utf-8",
        _ => "application/octet-stream",
    }
}
