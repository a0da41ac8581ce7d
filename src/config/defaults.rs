//! What a config without `[servers]` or `[recipes]` offers: the original launcher's.

use indexmap::IndexMap;

use super::Described;

fn described(items: &[(&str, &str)]) -> IndexMap<String, Described> {
    items
        .iter()
        .map(|(name, description)| {
            (
                name.to_string(),
                Described {
                    description: description.to_string(),
                    fail: false,
                    command: None,
                },
            )
        })
        .collect()
}

/// The servers the original launcher offered.
pub(super) fn servers() -> IndexMap<String, Described> {
    described(&[
        ("india_openstack_essex", "FutureGrid india, OpenStack Essex"),
        (
            "sierra_openstack_grizzly",
            "FutureGrid sierra, OpenStack Grizzly",
        ),
    ])
}

/// The recipes the original launcher offered.
pub(super) fn recipes() -> IndexMap<String, Described> {
    described(&[
        (
            "Slurm Cluster",
            "A Slurm batch cluster: one controller, compute nodes",
        ),
        (
            "Hadoop",
            "A Hadoop cluster: HDFS name node and data nodes, YARN",
        ),
        (
            "Ganglia",
            "Ganglia monitoring: gmetad and a gmond on every host",
        ),
        (
            "Nagios",
            "Nagios monitoring server with host and service checks",
        ),
    ])
}
