//! Size presets with the Go operator's names and numbers (only the Mattermost app part; the
//! operator-managed MinIO/MySQL parts are not supported).

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::ResourceRequirements;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

/// Preset used when `spec.size` is empty.
pub const DEFAULT_SIZE: &str = "5000users";

/// Replicas and container resources of one preset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SizePreset {
    /// Preset name as written in `spec.size`.
    pub name: &'static str,
    /// Mattermost pods.
    pub replicas: i32,
    /// CPU request.
    pub cpu_request: &'static str,
    /// Memory request.
    pub memory_request: &'static str,
    /// CPU limit.
    pub cpu_limit: &'static str,
    /// Memory limit.
    pub memory_limit: &'static str,
}

const fn preset(
    name: &'static str,
    replicas: i32,
    cpu_request: &'static str,
    memory_request: &'static str,
    cpu_limit: &'static str,
    memory_limit: &'static str,
) -> SizePreset {
    SizePreset {
        name,
        replicas,
        cpu_request,
        memory_request,
        cpu_limit,
        memory_limit,
    }
}

/// Every preset, as in the Go operator.
pub const SIZE_PRESETS: [SizePreset; 9] = [
    preset("100users", 1, "100m", "256Mi", "2000m", "4Gi"),
    preset("1000users", 2, "150m", "256Mi", "2000m", "4Gi"),
    preset("5000users", 2, "500m", "500Mi", "4000m", "8Gi"),
    preset("10000users", 2, "500m", "500Mi", "4000m", "8Gi"),
    preset("25000users", 2, "1000m", "4Gi", "4000m", "16Gi"),
    preset("cloud10users", 2, "10m", "150Mi", "2000m", "4Gi"),
    preset("cloud100users", 2, "50m", "256Mi", "2000m", "4Gi"),
    preset("miniSingleton", 1, "10m", "150Mi", "2000m", "4Gi"),
    preset("miniHA", 2, "10m", "150Mi", "2000m", "4Gi"),
];

impl SizePreset {
    /// The preset named `name`, if any.
    pub fn named(name: &str) -> Option<SizePreset> {
        SIZE_PRESETS.iter().copied().find(|p| p.name == name)
    }

    /// The default preset (5000users).
    pub fn default_preset() -> SizePreset {
        SIZE_PRESETS[2]
    }

    /// Container resources of the preset.
    pub fn resources(&self) -> ResourceRequirements {
        let list = |cpu: &str, mem: &str| {
            BTreeMap::from([
                ("cpu".to_owned(), Quantity(cpu.to_owned())),
                ("memory".to_owned(), Quantity(mem.to_owned())),
            ])
        };
        ResourceRequirements {
            requests: Some(list(self.cpu_request, self.memory_request)),
            limits: Some(list(self.cpu_limit, self.memory_limit)),
            ..Default::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presets_match_the_go_operator() {
        assert_eq!(SizePreset::default_preset().name, DEFAULT_SIZE);
        let p = SizePreset::named("25000users").unwrap();
        assert_eq!((p.replicas, p.cpu_request, p.memory_limit), (2, "1000m", "16Gi"));
        assert_eq!(SizePreset::named("100users").unwrap().replicas, 1);
        assert!(SizePreset::named("250000users").is_none());
    }
}
