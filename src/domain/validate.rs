//! Checks of stream fields and endpoint requests that hold for every provider kind, bounded by
//! the provider's capability (docs/design.md §1 gives the KVS limits, the strictest of the kinds).
//!
//! DeviceName, MediaType, TagKey and TagValue are checked exactly as the KVS model (botocore's
//! `kinesisvideo` 2017-09-30) constrains them; `tests/kinesis_video.rs` checks `validate_only`
//! against the model's own lengths and patterns.

use std::time::Duration;

use unicode_properties::{GeneralCategoryGroup, UnicodeGeneralCategory};

use super::capability::Capability;
use super::endpoint::{CloudFrontTarget, EndpointSupport, EndpointsRequest, MAX_PATH_LEN};
use super::stream::{StreamPatch, StreamSpec};
use crate::error::{Error, FieldViolation, MAX_VIOLATIONS, Result};

/// The longest device name.
pub const MAX_DEVICE_NAME_LEN: usize = 128;
/// The longest media type.
pub const MAX_MEDIA_TYPE_LEN: usize = 128;
/// The longest KMS key id.
pub const MAX_KMS_KEY_ID_LEN: usize = 2048;
/// The longest tag key.
pub const MAX_TAG_KEY_LEN: usize = 128;
/// The longest tag value.
pub const MAX_TAG_VALUE_LEN: usize = 256;
/// The longest request_id.
pub const MAX_REQUEST_ID_LEN: usize = 128;

/// Collects field violations so a caller learns every problem at once, up to
/// [`MAX_VIOLATIONS`]: past them it refuses more, and a check over a list the caller sized
/// stops at the first refusal ([`Violations::is_full`]), so that a huge bad request costs one
/// pass over it, not a violation per entry. The error then says that more were found.
#[derive(Default)]
pub struct Violations {
    listed: Vec<FieldViolation>,
    /// Violations offered once the list was full: checks stop when there is one, so it stays
    /// small however many the request holds.
    refused: usize,
}

impl Violations {
    /// Records a violation of `field`, or refuses it when [`MAX_VIOLATIONS`] are listed.
    pub fn add(&mut self, field: impl Into<String>, description: impl Into<String>) {
        if self.listed.len() < MAX_VIOLATIONS {
            self.listed.push(FieldViolation {
                field: field.into(),
                description: description.into(),
            });
        } else {
            self.refused += 1;
        }
    }

    /// Whether a violation was refused: the list is full and more were found, so a check
    /// over many entries can stop looking.
    pub fn is_full(&self) -> bool {
        self.refused > 0
    }

    /// Records the error of a check, if it failed.
    pub fn check(&mut self, field: &str, result: std::result::Result<(), String>) {
        if let Err(why) = result {
            self.add(field, why);
        }
    }

    /// Takes over the violations of an INVALID_ARGUMENT error; other errors pass through.
    pub fn absorb(&mut self, result: Result<()>) -> Result<()> {
        match result {
            Err(e) if !e.violations().is_empty() => {
                for v in e.violations() {
                    self.add(v.field.clone(), v.description.clone());
                }
                Ok(())
            }
            other => other,
        }
    }

    /// `Ok` when nothing was recorded.
    pub fn finish(self) -> Result<()> {
        if self.listed.is_empty() {
            Ok(())
        } else {
            let more = self.is_full();
            Err(Error::invalid_and_more(self.listed, more))
        }
    }
}

/// A character of KVS's MediaType pattern `[\w\-\.\+]`, `\w` being ASCII (Java's default).
fn is_media_type_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | '+')
}

/// A character of KVS's tag pattern `[\p{L}\p{Z}\p{N}_.:/=+\-@]`.
fn is_tag_char(c: char) -> bool {
    matches!(
        c.general_category_group(),
        GeneralCategoryGroup::Letter
            | GeneralCategoryGroup::Separator
            | GeneralCategoryGroup::Number
    ) || matches!(c, '_' | '.' | ':' | '/' | '=' | '+' | '-' | '@')
}

/// KVS's DeviceName: `[a-zA-Z0-9_.-]+`, 1-128 characters.
fn device_name(value: &str) -> std::result::Result<(), String> {
    length(value, 1, MAX_DEVICE_NAME_LEN)?;
    if value
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
    {
        Ok(())
    } else {
        Err("may hold only ASCII letters, digits, '_', '.' and '-'".to_string())
    }
}

fn media_type(value: &str) -> std::result::Result<(), String> {
    let part = |p: &str| !p.is_empty() && p.chars().all(is_media_type_char);
    let valid = value.len() <= MAX_MEDIA_TYPE_LEN
        && value.split(',').all(|one| {
            one.split_once('/')
                .is_some_and(|(kind, sub)| part(kind) && part(sub))
        });
    if valid {
        Ok(())
    } else {
        Err(format!(
            "must be type/subtype[,type/subtype...] (e.g. video/h264) of ASCII letters, digits, \
             '_', '-', '.' and '+', at most {MAX_MEDIA_TYPE_LEN} characters"
        ))
    }
}

fn length(value: &str, min: usize, max: usize) -> std::result::Result<(), String> {
    let n = value.chars().count();
    if (min..=max).contains(&n) {
        Ok(())
    } else {
        Err(format!("must be {min}-{max} characters long, is {n}"))
    }
}

fn retention(hours: i32, max: i32) -> std::result::Result<(), String> {
    if (0..=max).contains(&hours) {
        Ok(())
    } else {
        Err(format!("must be 0-{max} hours"))
    }
}

/// What a tag may hold, for a violation.
const TAG_CHARS: &str = "may hold only letters, digits, spaces and _ . : / = + - @";

fn tags(
    v: &mut Violations,
    field: &str,
    tags: &std::collections::BTreeMap<String, String>,
    max: usize,
) {
    if tags.len() > max {
        v.add(field, format!("at most {max} tags, got {}", tags.len()));
    }
    for (key, value) in tags {
        if v.is_full() {
            return;
        }
        let at = || format!("{field}[{}]", key.chars().take(40).collect::<String>());
        if let Err(why) = length(key, 1, MAX_TAG_KEY_LEN) {
            v.add(at(), format!("key {why}"));
        }
        if !key.chars().all(is_tag_char) {
            v.add(at(), format!("key {TAG_CHARS}"));
        }
        if let Err(why) = length(value, 0, MAX_TAG_VALUE_LEN) {
            v.add(at(), format!("value {why}"));
        }
        if !value.chars().all(is_tag_char) {
            v.add(at(), format!("value {TAG_CHARS}"));
        }
    }
}

/// Checks the fields of a stream to create; `prefix` is the field path of the stream.
pub fn check_spec(spec: &StreamSpec, cap: &Capability, prefix: &str, v: &mut Violations) {
    let f = |name: &str| format!("{prefix}.{name}");
    if !spec.media_type.is_empty() {
        v.check(&f("media_type"), media_type(&spec.media_type));
    }
    if !spec.device_name.is_empty() {
        v.check(&f("device_name"), device_name(&spec.device_name));
    }
    if !spec.kms_key_id.is_empty() {
        v.check(
            &f("kms_key_id"),
            length(&spec.kms_key_id, 1, MAX_KMS_KEY_ID_LEN),
        );
    }
    v.check(
        &f("data_retention_hours"),
        retention(spec.data_retention_hours, cap.max_data_retention_hours),
    );
    tags(v, &f("tags"), &spec.tags, cap.max_tags);
}

/// Checks the fields of an update.
pub fn check_patch(patch: &StreamPatch, cap: &Capability, v: &mut Violations) {
    if let Some(value) = &patch.media_type {
        v.check("stream.media_type", media_type(value));
    }
    if let Some(value) = &patch.device_name {
        v.check("stream.device_name", device_name(value));
    }
    if let Some(hours) = patch.data_retention_hours {
        v.check(
            "stream.data_retention_hours",
            retention(hours, cap.max_data_retention_hours),
        );
    }
    if let Some(t) = &patch.tags {
        tags(v, "stream.tags", t, cap.max_tags);
    }
}

/// Checks an AIP-155 request_id: empty, or 1-128 printable ASCII characters without spaces.
pub fn check_request_id(id: &str, v: &mut Violations) {
    if !id.is_empty()
        && (id.len() > MAX_REQUEST_ID_LEN || !id.bytes().all(|b| b.is_ascii_graphic()))
    {
        v.add(
            "request_id",
            format!(
                "must be at most {MAX_REQUEST_ID_LEN} printable ASCII characters (a UUID is best)"
            ),
        );
    }
}

/// Checks an etag a caller sent back.
pub fn check_etag(etag: &str, field: &str, v: &mut Violations) {
    if etag.len() > 256 {
        v.add(field, "longer than any etag streamgate issues");
    }
}

/// Checks what the kind cannot serve: an unsupported purpose or protocol, a lifetime beyond
/// `max_lifetime`. Shape checks (purposes given, lifetime > 0) are the handler's.
pub fn check_endpoints_request(
    request: &EndpointsRequest,
    support: &[EndpointSupport],
    max_lifetime: Duration,
    v: &mut Violations,
) {
    for (i, purpose) in request.purposes.iter().enumerate() {
        let Some(served) = support.iter().find(|s| s.purpose == *purpose) else {
            v.add(
                format!("purposes[{i}]"),
                format!("this provider serves no {} endpoint", purpose.as_str()),
            );
            continue;
        };
        if let Some(protocol) = request.protocol
            && !served.protocols.contains(&protocol)
        {
            v.add(
                "protocol",
                format!(
                    "this provider serves {} over {}, not {}",
                    purpose.as_str(),
                    served
                        .protocols
                        .iter()
                        .map(|p| p.as_str())
                        .collect::<Vec<_>>()
                        .join(", "),
                    protocol.as_str()
                ),
            );
        }
    }
    if request.lifetime > max_lifetime {
        v.add(
            "lifetime",
            format!(
                "at most {}s for this provider, got {}s",
                max_lifetime.as_secs(),
                request.lifetime.as_secs()
            ),
        );
    }
}

/// Checks a CloudFront target's own shape: a path of printable ASCII without a query or a
/// fragment (so that it goes into a URL and a policy statement as it is), and an IPv4 address
/// or CIDR range.
pub fn check_cloudfront(target: &CloudFrontTarget, field: &str, v: &mut Violations) {
    let path = &target.path;
    if path.is_empty() {
        v.add(format!("{field}.path"), "required");
    } else if path.len() > MAX_PATH_LEN {
        v.add(
            format!("{field}.path"),
            format!("at most {MAX_PATH_LEN} bytes, got {}", path.len()),
        );
    } else if path.starts_with('/')
        || !path
            .chars()
            .all(|c| c.is_ascii_graphic() && !matches!(c, '?' | '#' | '"' | '\\'))
    {
        v.add(
            format!("{field}.path"),
            "printable ASCII (percent-encode the rest) without a leading '/', '?', '#', '\"' or '\\'",
        );
    }
    if let Some(range) = &target.policy.ip_range
        && !is_ipv4_cidr(range)
    {
        v.add(
            format!("{field}.ip_range"),
            "an IPv4 address or range in CIDR notation, e.g. 192.0.2.0/24",
        );
    }
}

fn is_ipv4_cidr(text: &str) -> bool {
    let (address, bits) = text.split_once('/').unwrap_or((text, "32"));
    address.parse::<std::net::Ipv4Addr>().is_ok()
        && !bits.starts_with('+')
        && bits.parse::<u8>().is_ok_and(|b| b <= 32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checks_stop_at_the_first_violation_past_the_cap() {
        let bad: std::collections::BTreeMap<String, String> = (0..300_000)
            .map(|i| (format!("key\n{i}"), "value\r".to_string()))
            .collect();
        let mut v = Violations::default();
        tags(&mut v, "stream.tags", &bad, usize::MAX);
        // One tag past the cap was looked at (its two violations refused), no more.
        assert_eq!(v.refused, 2);
        assert_eq!(v.listed.len(), MAX_VIOLATIONS);
        let error = v.finish().unwrap_err();
        let last = error.violations().last().unwrap();
        assert_eq!(
            (last.field.as_str(), last.description.as_str()),
            ("*", "more violations left out")
        );
        assert!(error.message().ends_with("(and more violations left out)"));
    }

    #[test]
    fn up_to_the_cap_every_violation_is_listed() {
        let mut v = Violations::default();
        for i in 0..MAX_VIOLATIONS {
            v.add(format!("f{i}"), "bad");
        }
        assert!(!v.is_full());
        let error = v.finish().unwrap_err();
        assert_eq!(error.violations().len(), MAX_VIOLATIONS);
        assert!(!error.message().contains("left out"));
    }

    #[test]
    fn media_types() {
        assert!(media_type("video/h264").is_ok());
        assert!(media_type("video/h264,audio/aac").is_ok());
        assert!(media_type("h264").is_err());
        assert!(media_type("video/").is_err());
        assert!(media_type("vidéo/h264").is_err());
    }
}

#[cfg(test)]
mod endpoint_tests {
    use super::*;
    use crate::domain::endpoint::{CustomPolicy, EndpointProtocol, EndpointPurpose, PlaybackMode};

    fn support() -> Vec<EndpointSupport> {
        vec![EndpointSupport {
            purpose: EndpointPurpose::Playback,
            protocols: vec![EndpointProtocol::Hls, EndpointProtocol::Dash],
        }]
    }

    fn request(
        purposes: Vec<EndpointPurpose>,
        protocol: Option<EndpointProtocol>,
    ) -> EndpointsRequest {
        EndpointsRequest {
            purposes,
            protocol,
            lifetime: Duration::from_secs(60),
            playback: PlaybackMode::Live,
            cloudfront: None,
        }
    }

    fn fields(request: &EndpointsRequest, max: Duration) -> Vec<String> {
        let mut v = Violations::default();
        check_endpoints_request(request, &support(), max, &mut v);
        match v.finish() {
            Ok(()) => Vec::new(),
            Err(e) => e.violations().iter().map(|f| f.field.clone()).collect(),
        }
    }

    #[test]
    fn cloudfront_targets_need_a_clean_path_and_a_cidr_range() {
        let check = |path: &str, ip_range: Option<&str>| {
            let mut v = Violations::default();
            let target = CloudFrontTarget {
                path: path.to_string(),
                signed: false,
                policy: CustomPolicy {
                    ip_range: ip_range.map(str::to_string),
                    start_ms: None,
                },
            };
            check_cloudfront(&target, "cloudfront", &mut v);
            v.finish()
                .err()
                .map(|e| {
                    e.violations()
                        .iter()
                        .map(|f| f.field.clone())
                        .collect::<Vec<_>>()
                })
                .unwrap_or_default()
        };
        assert!(check("live/cam-7/index.m3u8", Some("192.0.2.0/24")).is_empty());
        assert_eq!(check("", None), ["cloudfront.path"]);
        assert_eq!(check("/a", None), ["cloudfront.path"]);
        assert_eq!(check("a?b=1", None), ["cloudfront.path"]);
        assert!(check("a", Some("192.0.2.7")).is_empty());
        assert_eq!(check("a\"b", None), ["cloudfront.path"]);
        assert_eq!(check("a", Some("192.0.2")), ["cloudfront.ip_range"]);
        assert_eq!(check("a", Some("192.0.2.0/33")), ["cloudfront.ip_range"]);
    }

    #[test]
    fn the_default_protocol_is_the_first_the_kind_lists() {
        let r = request(vec![EndpointPurpose::Playback], None);
        assert_eq!(
            r.protocol_for(&support(), EndpointPurpose::Playback),
            Some(EndpointProtocol::Hls)
        );
        assert!(fields(&r, Duration::from_secs(60)).is_empty());
    }

    #[test]
    fn unserved_purposes_protocols_and_lifetimes_are_violations() {
        let r = request(
            vec![EndpointPurpose::Ingest, EndpointPurpose::Playback],
            Some(EndpointProtocol::Rtmp),
        );
        assert_eq!(
            fields(&r, Duration::from_secs(59)),
            ["purposes[0]", "protocol", "lifetime"]
        );
    }
}
