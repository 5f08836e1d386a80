//! Scrapes the gateway's Prometheus endpoint over plain HTTP/1.1 and reads samples out of the
//! text format.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// `GET /metrics` on `addr`: the body, after checking the status and content type. Retries
/// the connection while the endpoint is not listening yet (the gateway binds it while it
/// starts, after the test's own gRPC listener).
pub async fn scrape(addr: SocketAddr) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut stream = loop {
        match tokio::net::TcpStream::connect(addr).await {
            Ok(stream) => break stream,
            Err(e) if Instant::now() > deadline => panic!("cannot connect to {addr}: {e}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    };
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: streamgate\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    let (head, body) = response.split_once("\r\n\r\n").unwrap();
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: text/plain; version=0.0.4"),
        "{head}"
    );
    body.to_string()
}

/// One sample line (`name{a="x",b="y"} 3`).
struct Sample<'a> {
    name: &'a str,
    labels: Vec<(&'a str, &'a str)>,
    value: f64,
}

fn parse_line(line: &str) -> Option<Sample<'_>> {
    let (series, value) = line.rsplit_once(' ')?;
    let value = value.parse().ok()?;
    let Some((name, labels)) = series.split_once('{') else {
        return Some(Sample {
            name: series,
            labels: Vec::new(),
            value,
        });
    };
    let labels = labels
        .strip_suffix('}')?
        .split("\",")
        .filter(|l| !l.is_empty())
        .filter_map(|l| {
            let (k, v) = l.split_once("=\"")?;
            Some((k, v.trim_end_matches('"')))
        })
        .collect();
    Some(Sample {
        name,
        labels,
        value,
    })
}

/// The value of the one sample of `name` that has every label of `with` and none named in
/// `without`; `None` when there is no such sample. Panics when several match.
pub fn sample(text: &str, name: &str, with: &[(&str, &str)], without: &[&str]) -> Option<f64> {
    let matching: Vec<f64> = text
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(parse_line)
        .filter(|s| {
            s.name == name
                && with.iter().all(|w| s.labels.contains(w))
                && without.iter().all(|k| s.labels.iter().all(|(l, _)| l != k))
        })
        .map(|s| s.value)
        .collect();
    assert!(
        matching.len() <= 1,
        "{} samples of {name} match {with:?}:\n{text}",
        matching.len()
    );
    matching.first().copied()
}
