//! The hostfile of a cluster run as a Kubernetes Indexed Job (`deploy/kubernetes/`), built
//! from the pod's environment so that the manifests need no init container:
//!
//! - `JOB_COMPLETION_INDEX` (set by Kubernetes): this process's index;
//! - `WEIR_PROCESSES`: the Job's `completions` (= `parallelism`);
//! - `WEIR_JOB_NAME`, `WEIR_CLUSTER_SERVICE`, `WEIR_NAMESPACE`: the Job, its headless
//!   Service (the pods' `subdomain`) and the namespace;
//! - `WEIR_CLUSTER_PORT` (default 7000) and `WEIR_CLUSTER_DOMAIN` (default `cluster.local`).
//!
//! Process `i` is `JOB-i.SERVICE.NAMESPACE.svc.DOMAIN:PORT`: the stable DNS name Kubernetes
//! gives the pod of completion index `i` of an Indexed Job whose pods set `subdomain`.

/// Where this process is, and every process's address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KubernetesCluster {
    pub process: usize,
    pub addresses: Vec<String>,
    pub port: u16,
}

/// The default port of the cluster's connections.
pub const DEFAULT_PORT: u16 = 7000;

impl KubernetesCluster {
    /// Reads the environment through `get`.
    pub fn from_env(get: impl Fn(&str) -> Option<String>) -> Result<KubernetesCluster, String> {
        let need = |name: &str| get(name).filter(|v| !v.is_empty()).ok_or_else(|| format!("{name} is not set"));
        let number = |name: &str, text: String| {
            text.trim().parse::<usize>().map_err(|_| format!("{name} is '{text}', not a number"))
        };
        let process = number("JOB_COMPLETION_INDEX", need("JOB_COMPLETION_INDEX")?)?;
        let processes = number("WEIR_PROCESSES", need("WEIR_PROCESSES")?)?;
        if processes == 0 || process >= processes {
            return Err(format!("JOB_COMPLETION_INDEX {process} is not below WEIR_PROCESSES {processes}"));
        }
        let (job, service, namespace) =
            (need("WEIR_JOB_NAME")?, need("WEIR_CLUSTER_SERVICE")?, need("WEIR_NAMESPACE")?);
        let port = match get("WEIR_CLUSTER_PORT") {
            Some(port) => {
                port.trim().parse::<u16>().map_err(|_| format!("WEIR_CLUSTER_PORT is '{port}', not a port"))?
            }
            None => DEFAULT_PORT,
        };
        let domain = get("WEIR_CLUSTER_DOMAIN").unwrap_or_else(|| "cluster.local".into());
        let addresses =
            (0..processes).map(|index| format!("{job}-{index}.{service}.{namespace}.svc.{domain}:{port}")).collect();
        Ok(KubernetesCluster { process, addresses, port })
    }

    /// The hostfile: one address per line, in process order.
    pub fn hostfile(&self) -> String {
        self.addresses.iter().map(|address| format!("{address}\n")).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_indexed_jobs_pods_are_named_by_index() {
        let env = [
            ("JOB_COMPLETION_INDEX", "2"),
            ("WEIR_PROCESSES", "3"),
            ("WEIR_JOB_NAME", "nightly"),
            ("WEIR_CLUSTER_SERVICE", "weir-cluster"),
            ("WEIR_NAMESPACE", "etl"),
        ];
        let get = |name: &str| env.iter().find(|(k, _)| *k == name).map(|(_, v)| v.to_string());
        let cluster = KubernetesCluster::from_env(get).unwrap();
        assert_eq!(cluster.process, 2);
        assert_eq!(cluster.addresses[0], "nightly-0.weir-cluster.etl.svc.cluster.local:7000");
        assert_eq!(cluster.hostfile().lines().count(), 3);
        let missing = |name: &str| if name == "WEIR_NAMESPACE" { None } else { get(name) };
        assert_eq!(KubernetesCluster::from_env(missing).unwrap_err(), "WEIR_NAMESPACE is not set");
    }
}
