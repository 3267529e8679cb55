//! The client's one connection to a heart: where it is (options, else
//! `DATA_DIR/address` and `DATA_DIR/token`), the one `ureq::Agent` with a
//! global timeout, and the mapping of every answer: a 2xx is its body,
//! any other status is the heart's refusal ([`Failed::Refused`], with the
//! text of its `{"error": ...}`), no answer at all is
//! [`Failed::Unreachable`]. ureq never maps a status itself.

use std::fs;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use ureq::typestate::WithoutBody;

use super::args::Args;
use super::render::first_line;
use super::{Failed, Outcome};
use crate::error::Error;
use crate::heart::layout::Layout;
use crate::net;
use crate::protocol::ApiError;

/// Bound on a whole request. A start answers only once the instance is
/// RUNNING or ERROR: after its startup commands (each up to
/// `startup_timeout`, 300 s by default) and its `start_timeout` (20 s by
/// default); a register copies the source first. So the bound is generous;
/// an unreachable heart is caught by the connect timeout instead.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(600);
/// Bound on connecting to the heart.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Largest answer read from the heart (a log can be long).
const ANSWER_LIMIT: u64 = 64 << 20;

/// A running heart: its base URL, token and the one agent that talks to
/// it.
pub(super) struct Heart {
    agent: ureq::Agent,
    base: String,
    bearer: String,
    /// The host applications on that node are reached at.
    pub app_host: String,
}

impl Heart {
    /// Resolves the address and token (options win over the files in the
    /// data directory) and builds the agent.
    pub(super) fn connect(args: &Args) -> Outcome<Heart> {
        let layout = Layout::new(&args.data_dir);
        let address = match &args.address {
            Some(address) => address.trim().to_string(),
            None => read_state_file(&layout.address(), "address file")?,
        };
        let token = match &args.token {
            Some(token) => token.trim().to_string(),
            None => read_state_file(&layout.token(), "token file")?,
        };
        let authority = address
            .strip_prefix("http://")
            .unwrap_or(&address)
            .trim_end_matches('/');
        let authority = loopback_for_wildcard(authority);
        if authority.is_empty() || address.starts_with("https://") {
            return Err(Failed::Misuse(Error::Usage(format!(
                "invalid heart address {address:?}: expected IP:PORT"
            ))));
        }
        let app_host = match authority.rsplit_once(':') {
            Some((host, _)) => host.to_string(),
            None => authority.clone(),
        };
        let config = ureq::Agent::config_builder()
            .timeout_global(Some(REQUEST_TIMEOUT))
            .timeout_connect(Some(CONNECT_TIMEOUT))
            .http_status_as_error(false)
            .build();
        Ok(Heart {
            agent: config.into(),
            base: format!("http://{authority}"),
            bearer: format!("Bearer {token}"),
            app_host,
        })
    }

    /// The URL of `path` on this heart.
    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// `GET path`.
    pub(super) fn get(&self, path: &str) -> Outcome<String> {
        self.call(self.agent.get(self.url(path)))
    }

    /// `GET path`, its answer streamed: each piece of the body goes to
    /// `out` as it arrives, with no bound on the whole request (a follow
    /// runs until the heart ends it); `out` answers false to stop. A
    /// status other than 2xx is the heart's refusal, as for [`Heart::get`].
    pub(super) fn stream(
        &self,
        path: &str,
        mut out: impl FnMut(&[u8]) -> Outcome<bool>,
    ) -> Outcome<()> {
        use std::io::Read;
        let request = self
            .agent
            .get(self.url(path))
            .header("Authorization", &self.bearer)
            .config()
            .timeout_global(None)
            .build();
        let unreachable = |err: ureq::Error| {
            Failed::Unreachable(Error::Http(format!(
                "unable to reach the heart at {}: {err}",
                self.base
            )))
        };
        let mut response = request.call().map_err(unreachable)?;
        if !response.status().is_success() {
            return self.answer(Ok(response)).map(|_| ());
        }
        let mut reader = response.body_mut().as_reader();
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            let n = match reader.read(&mut buf) {
                Ok(0) => return Ok(()),
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    return Err(Failed::Unreachable(Error::Http(format!(
                        "the heart at {} broke off the answer: {e}",
                        self.base
                    ))))
                }
            };
            if !out(&buf[..n])? {
                return Ok(());
            }
        }
    }

    /// `DELETE path`.
    pub(super) fn delete(&self, path: &str) -> Outcome<String> {
        self.call(self.agent.delete(self.url(path)))
    }

    /// Sends a request without a body, with the token.
    fn call(&self, request: ureq::RequestBuilder<WithoutBody>) -> Outcome<String> {
        self.answer(request.header("Authorization", &self.bearer).call())
    }

    /// `POST path`, with a JSON `body` or none.
    pub(super) fn post(&self, path: &str, body: Option<&[u8]>) -> Outcome<String> {
        self.send(self.agent.post(self.url(path)), body)
    }

    /// `PUT path` with a JSON `body`.
    pub(super) fn put(&self, path: &str, body: &[u8]) -> Outcome<String> {
        self.send(self.agent.put(self.url(path)), Some(body))
    }

    /// `PATCH path` with a JSON `body`.
    pub(super) fn patch(&self, path: &str, body: &[u8]) -> Outcome<String> {
        self.send(self.agent.patch(self.url(path)), Some(body))
    }

    /// `POST /uploads` with the archive `file` as the body (its length
    /// declared, streamed from disk), counting what was sent in
    /// `progress`.
    pub(super) fn upload(&self, file: &Path, progress: &mut dyn FnMut(u64)) -> Outcome<String> {
        let mut reader =
            fs::File::open(file).map_err(|e| Failed::Other(Error::io("open", file, e)))?;
        let len = reader
            .metadata()
            .map_err(|e| Failed::Other(Error::io("read", file, e)))?
            .len();
        let mut counted = Counted {
            inner: &mut reader,
            sent: 0,
            progress,
        };
        let request = self
            .agent
            .post(self.url("/uploads"))
            .header("Authorization", &self.bearer)
            .header("Content-Length", &len.to_string())
            .content_type("application/gzip");
        self.answer(request.send(ureq::SendBody::from_reader(&mut counted)))
    }

    /// Sends a request that may carry a JSON body, with the token.
    fn send(
        &self,
        request: ureq::RequestBuilder<ureq::typestate::WithBody>,
        body: Option<&[u8]>,
    ) -> Outcome<String> {
        let request = request.header("Authorization", &self.bearer);
        self.answer(match body {
            Some(body) => request.content_type("application/json").send(body),
            None => request.send_empty(),
        })
    }

    /// The body of a 2xx answer; any other status is the heart's refusal,
    /// with the text of its `{"error": ...}`.
    fn answer(
        &self,
        result: Result<ureq::http::Response<ureq::Body>, ureq::Error>,
    ) -> Outcome<String> {
        let unreachable = |err: ureq::Error| {
            let message = match err {
                ureq::Error::Timeout(_) => format!(
                    "no answer from the heart at {} within {} s; the request may still \
                     complete (see pm-heart list)",
                    self.base,
                    REQUEST_TIMEOUT.as_secs()
                ),
                err => format!("unable to reach the heart at {}: {err}", self.base),
            };
            Failed::Unreachable(Error::Http(message))
        };
        let mut response = result.map_err(unreachable)?;
        let status = response.status().as_u16();
        let text = response
            .body_mut()
            .with_config()
            .limit(ANSWER_LIMIT)
            .read_to_string()
            .map_err(unreachable)?;
        if (200..300).contains(&status) {
            return Ok(text);
        }
        let message = match serde_json::from_str::<ApiError>(&text) {
            Ok(api) => api.error,
            Err(_) if !text.trim().is_empty() => first_line(&text).to_string(),
            Err(_) => response
                .status()
                .canonical_reason()
                .unwrap_or("error")
                .to_string(),
        };
        Err(Failed::Refused {
            status,
            message,
            answer: text,
        })
    }
}

/// A file the heart writes when it starts; missing means no heart ran
/// with this data directory.
fn read_state_file(path: &Path, what: &str) -> Outcome<String> {
    let text = fs::read_to_string(path)
        .map_err(|e| Failed::Unreachable(Error::io(format!("read the heart's {what}"), path, e)))?;
    let text = text.trim().to_string();
    if text.is_empty() {
        return Err(Failed::Unreachable(Error::invalid(format!(
            "the heart's {what} {} is empty",
            path.display()
        ))));
    }
    Ok(text)
}

/// A heart listening on every address (`0.0.0.0:P`, `[::]:P`) is reached
/// on the loopback; any other authority is kept as given.
fn loopback_for_wildcard(authority: &str) -> String {
    match authority.parse::<SocketAddr>() {
        Ok(addr) => net::loopback_of(addr).to_string(),
        Err(_) => authority.to_string(),
    }
}

/// A reader that tells `progress` how much went through it.
struct Counted<'a> {
    inner: &'a mut dyn std::io::Read,
    sent: u64,
    progress: &'a mut dyn FnMut(u64),
}

impl std::io::Read for Counted<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.sent += n as u64;
        (self.progress)(self.sent);
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exit::Tool;
    use std::path::PathBuf;

    #[test]
    fn wildcard_addresses_map_to_the_loopback() {
        assert_eq!(loopback_for_wildcard("0.0.0.0:42500"), "127.0.0.1:42500");
        assert_eq!(loopback_for_wildcard("[::]:42500"), "[::1]:42500");
        assert_eq!(loopback_for_wildcard("10.0.0.5:1"), "10.0.0.5:1");
        assert_eq!(loopback_for_wildcard("node-1:42500"), "node-1:42500");
    }

    #[test]
    fn answers_map_to_text_or_refusals() {
        let server = tiny_http::Server::http("127.0.0.1:0").unwrap();
        let addr = server.server_addr().to_ip().unwrap();
        let args = Args {
            command: Some(super::super::args::Command::List),
            data_dir: PathBuf::from("/nonexistent"),
            address: Some(format!("http://{addr}/")),
            token: Some("t0ken".into()),
            json: false,
            tail: None,
            since: None,
            follow: false,
            access: false,
            id: None,
            new: false,
            replace: false,
        };
        let heart = Heart::connect(&args).unwrap();
        let answers = [
            (200, r#"{"instances": []}"#),
            (404, r#"{"error": "no instance x"}"#),
            (502, "bad gateway\nmore"),
            (503, ""),
        ];
        let fake = std::thread::spawn(move || {
            for (status, body) in answers {
                let request = server.recv().unwrap();
                let auth = request
                    .headers()
                    .iter()
                    .find(|h| h.field.equiv("Authorization"))
                    .map(|h| h.value.to_string());
                assert_eq!(auth.as_deref(), Some("Bearer t0ken"));
                request
                    .respond(tiny_http::Response::from_string(body).with_status_code(status))
                    .unwrap();
            }
        });
        assert_eq!(heart.get("/instances").unwrap(), r#"{"instances": []}"#);
        let refused = heart.get("/instances/x").unwrap_err();
        assert_eq!(refused.exit_code(), Tool::NotFound);
        assert_eq!(refused.to_string(), "no instance x (HTTP 404)");
        let refused = heart.get("/runtimes").unwrap_err();
        assert_eq!(refused.to_string(), "bad gateway (HTTP 502)");
        let refused = heart.get("/runtimes").unwrap_err();
        assert_eq!(refused.to_string(), "Service Unavailable (HTTP 503)");
        fake.join().unwrap();

        // A port nobody listens on.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let dead = Heart::connect(&Args {
            address: Some(format!("127.0.0.1:{port}")),
            ..args
        })
        .unwrap();
        let gone = dead.get("/instances").unwrap_err();
        assert_eq!(gone.exit_code(), Tool::Temporary);
        assert!(gone
            .to_string()
            .starts_with("unable to reach the heart at http://127.0.0.1:"));
    }
}
