//! The table of the gRPC methods the server serves, made once from the descriptor sets it
//! registers (streamgate, health, reflection v1 and v1alpha): each method's names spelled every
//! way the layers need them, whether it is mutating and whether it is long-lived. Telemetry
//! (span names, metric labels), authorization, rate limits, the audit of refused calls and the
//! limits per caller read it; nothing here serves or decides anything.
//!
//! The mutating methods are the StreamService methods that start an operation, one per
//! [`Verb`]. Every mutating call is audited, refused or not. The long-lived methods are the
//! server-streaming ones: they stay open as long as their caller wants.

use std::collections::HashMap;
use std::sync::OnceLock;

use crate::domain::Verb;

/// The service whose operation-starting methods are the mutating ones.
const STREAM_SERVICE: &str = "streamgate.v1.StreamService";

/// One method the server serves, its names spelled every way the layers need them, made
/// once at start-up so that no call formats them.
#[derive(Debug)]
pub struct ServedMethod {
    /// Its position in [`served_methods`]: a key for per-method tables.
    pub index: usize,
    /// `package.Service/Method`: span names, authorization and rate-limit globs.
    pub full: String,
    /// `Service/Method`: the short form globs and messages use.
    pub short: String,
    /// `package.Service`.
    pub service: String,
    /// `Method`.
    pub method: String,
    /// Whether it asks for a change: it starts an operation, and is audited.
    pub mutating: bool,
    /// Whether it is long-lived: its server streams answers for as long as its caller wants
    /// (WatchStream, health Watch, reflection), so it is counted while open.
    pub long_lived: bool,
}

/// The served method at `path` (`/package.Service/Method`), if any.
pub fn served(path: &str) -> Option<&'static ServedMethod> {
    let table = served_table();
    table.by_path.get(path).map(|&i| &table.methods[i])
}

/// The mutating method at `path`, if it is one.
pub fn mutating(path: &str) -> Option<&'static ServedMethod> {
    served(path).filter(|m| m.mutating)
}

/// Every method the server serves, by [`ServedMethod::index`].
pub fn served_methods() -> &'static [ServedMethod] {
    &served_table().methods
}

struct ServedTable {
    methods: Vec<ServedMethod>,
    // foldhash: every layer looks the path up, and SipHash was 1.5% of a call; the table is
    // fixed at start-up, so a caller's paths cannot degrade it.
    by_path: HashMap<String, usize, foldhash::fast::RandomState>,
}

/// The methods of the descriptor sets the server registers.
fn served_table() -> &'static ServedTable {
    static SERVED: OnceLock<ServedTable> = OnceLock::new();
    SERVED.get_or_init(|| {
        use prost::Message;
        let sets = [
            crate::pb::FILE_DESCRIPTOR_SET,
            tonic_health::pb::FILE_DESCRIPTOR_SET,
            tonic_reflection::pb::v1::FILE_DESCRIPTOR_SET,
            tonic_reflection::pb::v1alpha::FILE_DESCRIPTOR_SET,
        ];
        let mut table = ServedTable {
            methods: Vec::new(),
            by_path: HashMap::default(),
        };
        for bytes in sets {
            // Built into the binary by build.rs and the tonic crates: always decodable.
            let Ok(set) = prost_types::FileDescriptorSet::decode(bytes) else {
                continue;
            };
            for file in &set.file {
                for service in &file.service {
                    let full_service = match file.package() {
                        "" => service.name().to_string(),
                        package => format!("{package}.{}", service.name()),
                    };
                    for method in &service.method {
                        let full = format!("{full_service}/{}", method.name());
                        if table.by_path.contains_key(&format!("/{full}")) {
                            continue;
                        }
                        let index = table.methods.len();
                        table.by_path.insert(format!("/{full}"), index);
                        table.methods.push(ServedMethod {
                            index,
                            short: format!("{}/{}", service.name(), method.name()),
                            full,
                            mutating: full_service == STREAM_SERVICE
                                && Verb::parse(method.name()).is_some(),
                            service: full_service.clone(),
                            method: method.name().to_string(),
                            long_lived: method.server_streaming(),
                        });
                    }
                }
            }
        }
        table
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_mutating_methods_are_the_stream_changes() {
        let mutating: Vec<&str> = served_methods()
            .iter()
            .filter(|m| m.mutating)
            .map(|m| m.full.as_str())
            .collect();
        assert_eq!(
            mutating,
            [
                "streamgate.v1.StreamService/CreateStream",
                "streamgate.v1.StreamService/UpdateStream",
                "streamgate.v1.StreamService/DeleteStream",
                "streamgate.v1.StreamService/BatchDeleteStreams",
            ]
        );
        assert_eq!(
            mutating_method("/streamgate.v1.StreamService/DeleteStream"),
            Some("DeleteStream")
        );
        for path in [
            "/streamgate.v1.StreamService/GetStream",
            "/streamgate.v1.OperationService/CancelOperation",
            "/streamgate.v1.StreamService/DeleteStreamX",
            "/other.StreamService/DeleteStream",
        ] {
            assert_eq!(mutating_method(path), None, "{path}");
        }
    }

    fn mutating_method(path: &str) -> Option<&'static str> {
        mutating(path).map(|m| m.method.as_str())
    }

    #[test]
    fn the_long_lived_methods_are_the_server_streaming_ones() {
        let long_lived: Vec<&str> = served_methods()
            .iter()
            .filter(|m| m.long_lived)
            .map(|m| m.full.as_str())
            .collect();
        assert_eq!(
            long_lived,
            [
                "streamgate.v1.StreamService/WatchStream",
                "grpc.health.v1.Health/Watch",
                "grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
                "grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
            ]
        );
    }

    #[test]
    fn every_served_method_is_found_by_its_path_and_index() {
        for method in served_methods() {
            let found = served(&format!("/{}", method.full)).unwrap();
            assert_eq!(found.index, method.index);
            assert_eq!(found.full, format!("{}/{}", found.service, found.method));
        }
        assert!(served("/grpc.health.v1.Health/Check").is_some());
        assert!(served("/streamgate.v1.StreamService/NoSuchMethod").is_none());
    }
}
