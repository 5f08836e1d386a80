//! The VOD API host of each region, as the official SDK's endpoint map gives it
//! ([`api_host`]); `endpoint_url` overrides it (`core.rs`).
//!
//! The map (alibabacloud_vod20170321's `_endpoint_map`, the same as aliyunsdkvod's
//! `endpoint.py`) sends `cn-hangzhou` to `vod.cn-shanghai.aliyuncs.com` and the regions of
//! [`CENTRAL`] to `vod.aliyuncs.com`; every other region is `vod.{region}.aliyuncs.com` (the
//! SDK's "regional" rule). `tests/aliyun_vod.rs` compares this table with the SDK's map, so the
//! two cannot drift.

/// Regions whose map entry is another region's host.
const REDIRECTED: &[(&str, &str)] = &[("cn-hangzhou", "vod.cn-shanghai.aliyuncs.com")];

/// Regions the map sends to the central host `vod.aliyuncs.com`.
const CENTRAL: &[&str] = &[
    "ap-northeast-2-pop",
    "ap-southeast-2",
    "ap-southeast-3",
    "cn-beijing-finance-1",
    "cn-beijing-finance-pop",
    "cn-beijing-gov-1",
    "cn-beijing-nu16-b01",
    "cn-chengdu",
    "cn-edge-1",
    "cn-fujian",
    "cn-haidian-cm12-c01",
    "cn-hangzhou-bj-b01",
    "cn-hangzhou-finance",
    "cn-hangzhou-internal-prod-1",
    "cn-hangzhou-internal-test-1",
    "cn-hangzhou-internal-test-2",
    "cn-hangzhou-internal-test-3",
    "cn-hangzhou-test-306",
    "cn-hongkong-finance-pop",
    "cn-huhehaote",
    "cn-huhehaote-nebula-1",
    "cn-qingdao",
    "cn-qingdao-nebula",
    "cn-shanghai-et15-b01",
    "cn-shanghai-et2-b01",
    "cn-shanghai-finance-1",
    "cn-shanghai-inner",
    "cn-shanghai-internal-test-1",
    "cn-shenzhen-finance-1",
    "cn-shenzhen-inner",
    "cn-shenzhen-st4-d01",
    "cn-shenzhen-su18-b01",
    "cn-wuhan",
    "cn-wulanchabu",
    "cn-yushanfang",
    "cn-zhangbei",
    "cn-zhangbei-na61-b01",
    "cn-zhangjiakou-na62-a01",
    "cn-zhengzhou-nebula-1",
    "eu-west-1-oxs",
    "me-east-1",
    "rus-west-1-pop",
    "us-east-1",
];

/// The central VOD host.
const CENTRAL_HOST: &str = "vod.aliyuncs.com";

/// The VOD API host of `region` (no scheme), as the official SDK's endpoint map gives it.
pub fn api_host(region: &str) -> String {
    if let Some((_, host)) = REDIRECTED.iter().find(|(r, _)| *r == region) {
        return (*host).to_string();
    }
    if CENTRAL.contains(&region) {
        return CENTRAL_HOST.to_string();
    }
    format!("vod.{region}.aliyuncs.com")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_common_regions() {
        assert_eq!(api_host("cn-hangzhou"), "vod.cn-shanghai.aliyuncs.com");
        assert_eq!(api_host("cn-shanghai"), "vod.cn-shanghai.aliyuncs.com");
        assert_eq!(api_host("us-east-1"), "vod.aliyuncs.com");
        assert_eq!(api_host("eu-central-1"), "vod.eu-central-1.aliyuncs.com");
    }
}
