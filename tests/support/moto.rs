//! moto's server (`moto_server` from the test venv) as a child process on 127.0.0.1, for
//! CloudFront web distributions, and its state manager.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::{free_port, venv_tool};

/// A running moto server; killed when dropped.
pub struct Moto {
    child: Child,
    pub port: u16,
}

/// Credentials moto accepts (it routes on the SigV4 scope and checks nothing else).
pub const AWS_ENV: [(&str, &str); 2] = [
    ("AWS_ACCESS_KEY_ID", "testing"),
    ("AWS_SECRET_ACCESS_KEY", "testing"),
];

impl Moto {
    /// Starts moto on a free port and waits until it answers.
    pub fn start() -> Self {
        let port = free_port();
        let child = Command::new(venv_tool("moto_server"))
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("moto_server");
        let moto = Moto { child, port };
        let deadline = Instant::now() + Duration::from_secs(30);
        while moto.request("GET", "/moto-api/data.json", "").is_none() {
            assert!(Instant::now() < deadline, "moto_server did not start");
            std::thread::sleep(Duration::from_millis(100));
        }
        moto
    }

    /// The endpoint_url to configure.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// One HTTP/1.1 request; the status and body, or None when nothing answers.
    fn request(&self, method: &str, path: &str, body: &str) -> Option<(u16, String)> {
        let mut stream = TcpStream::connect(("127.0.0.1", self.port)).ok()?;
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .ok()?;
        write!(
            stream,
            "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
            self.port,
            body.len()
        )
        .ok()?;
        let mut answer = String::new();
        stream.read_to_string(&mut answer).ok()?;
        let status = answer.split_whitespace().nth(1)?.parse().ok()?;
        let body = answer.split_once("\r\n\r\n").map(|(_, b)| b.to_string())?;
        Some((status, body))
    }

    /// Makes every new CloudFront distribution stay InProgress until it has been read
    /// `times` times (GetDistribution, GetDistributionConfig, UpdateDistribution, List).
    pub fn keep_distributions_in_progress(&self, times: u32) {
        let body = format!(
            r#"{{"model_name": "cloudfront::distribution", "transition": {{"progression": "manual", "times": {times}}}}}"#
        );
        let (status, text) = self
            .request("POST", "/moto-api/state-manager/set-transition", &body)
            .expect("moto state manager");
        assert!(status < 300, "set-transition: {status} {text}");
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
