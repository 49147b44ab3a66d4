//! Who a process is on a real host: its systemd unit, its container (docker, containerd,
//! CRI-O, podman) or its Kubernetes pod, read from its cgroup paths (/proc/PID/cgroup), the
//! names operators know processes by. Works on cgroup v1, v2 and hybrid hosts: the unified
//! (v2) path is preferred, then the `name=systemd` v1 hierarchy, then the memory controller's
//! path, then any other controller's.
use serde::{Deserialize, Serialize};

/// Attribution of one process. Every field is optional: a login shell has a unit
/// (`session-2.scope`) and nothing else; a container's process has a container id and, when
/// Kubernetes runs it, a pod.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Workload {
    /// The systemd unit (`nginx.service`, `session-2.scope`), when the path says so and it is
    /// not a container's own scope.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unit: Option<String>,
    /// The full container id (64 hex digits).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container_id: Option<String>,
    /// `docker`, `containerd`, `cri-o`, `podman`, or `kubernetes` when only kubepods says so.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container_runtime: Option<String>,
    /// The Kubernetes pod UID (with dashes), from a kubepods path.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_uid: Option<String>,
    /// The pod's QoS class (`guaranteed`, `burstable`, `besteffort`), from the same path.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_qos: Option<String>,
}

impl Workload {
    pub fn is_empty(&self) -> bool {
        *self == Workload::default()
    }

    /// The container id as `docker ps` shows it (12 digits).
    pub fn container_short(&self) -> Option<&str> {
        self.container_id.as_deref().map(|c| &c[..c.len().min(12)])
    }

    /// The known fields as (name, value), named as in JSON output: what events, findings and
    /// OTLP attributes carry.
    pub fn fields(&self) -> impl Iterator<Item = (&'static str, &str)> {
        [
            ("unit", &self.unit),
            ("container_id", &self.container_id),
            ("container_runtime", &self.container_runtime),
            ("pod_uid", &self.pod_uid),
            ("pod_qos", &self.pod_qos),
        ]
        .into_iter()
        .filter_map(|(k, v)| v.as_deref().map(|v| (k, v)))
    }

    /// From the contents of /proc/PID/cgroup: the first path, in order of preference, that
    /// names anything.
    pub fn from_proc_cgroup(text: &str) -> Option<Workload> {
        let mut v2 = None;
        let mut systemd = None;
        let mut memory = None;
        let mut others = Vec::new();
        for line in text.lines() {
            let mut parts = line.splitn(3, ':');
            let (Some(id), Some(ctrls), Some(path)) = (parts.next(), parts.next(), parts.next())
            else {
                continue;
            };
            if id == "0" && ctrls.is_empty() {
                v2 = Some(path);
            } else if ctrls.split(',').any(|c| c == "name=systemd") {
                systemd = Some(path);
            } else if ctrls.split(',').any(|c| c == "memory") {
                memory = Some(path);
            } else {
                others.push(path);
            }
        }
        [v2, systemd, memory]
            .into_iter()
            .flatten()
            .chain(others)
            .find_map(Workload::from_path)
    }

    /// From one cgroup path (`/system.slice/docker-<id>.scope`, `/kubepods/burstable/pod<uid>/<id>`,
    /// `/system.slice/nginx.service`...). None when it names nothing.
    pub fn from_path(path: &str) -> Option<Workload> {
        let mut w = Workload::default();
        let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
        let mut in_kubepods = false;
        let mut container_scope = None;
        for (i, seg) in segments.iter().enumerate() {
            if *seg == "kubepods" || seg.starts_with("kubepods.") || seg.starts_with("kubepods-") {
                in_kubepods = true;
            }
            if in_kubepods && w.pod_qos.is_none() {
                for qos in ["burstable", "besteffort", "guaranteed"] {
                    if seg.contains(qos) {
                        w.pod_qos = Some(qos.to_owned());
                    }
                }
            }
            if in_kubepods && let Some(uid) = pod_uid(seg) {
                w.pod_uid = Some(uid);
                continue;
            }
            if let Some((runtime, id)) = container_of(seg) {
                w.container_runtime = Some(runtime.to_owned());
                w.container_id = Some(id.to_owned());
                container_scope = Some(i);
                continue;
            }
            // cgroupfs drivers: /docker/<id>, /kubepods/<qos>/pod<uid>/<id>, /lxc.payload...
            if is_hex64(seg) && i > 0 {
                let parent = segments[i - 1];
                let runtime = match parent {
                    "docker" => Some("docker"),
                    "containerd" => Some("containerd"),
                    "libpod_parent" => Some("podman"),
                    _ if in_kubepods => Some("kubernetes"),
                    _ => None,
                };
                if let Some(r) = runtime {
                    w.container_runtime = Some(r.to_owned());
                    w.container_id = Some((*seg).to_owned());
                    container_scope = Some(i);
                    continue;
                }
            }
        }
        // The unit: the deepest .service, else the deepest .scope that is not a container's.
        let unit_at = |suffix: &str| {
            segments
                .iter()
                .enumerate()
                .rev()
                .find(|(i, s)| s.ends_with(suffix) && Some(*i) != container_scope)
                .map(|(_, s)| (*s).to_owned())
        };
        w.unit = unit_at(".service").or_else(|| {
            if w.container_id.is_some() || w.pod_uid.is_some() {
                None
            } else {
                unit_at(".scope")
            }
        });
        (!w.is_empty()).then_some(w)
    }
}

fn is_hex64(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// `docker-<id>.scope`, `cri-containerd-<id>.scope`, `crio-<id>.scope`, `libpod-<id>.scope`
/// (systemd cgroup driver), and `<prefix>:<runtime>:<id>` as some kubelets write them.
fn container_of(seg: &str) -> Option<(&'static str, &str)> {
    let body = seg.strip_suffix(".scope").unwrap_or(seg);
    for (prefix, runtime) in [
        ("docker-", "docker"),
        ("cri-containerd-", "containerd"),
        ("crio-", "cri-o"),
        ("libpod-", "podman"),
    ] {
        if let Some(id) = body.strip_prefix(prefix)
            && is_hex64(id)
        {
            return Some((runtime, id));
        }
    }
    let mut parts = seg.rsplitn(3, ':');
    if let (Some(id), Some(rt), Some(_)) = (parts.next(), parts.next(), parts.next())
        && is_hex64(id)
    {
        let runtime = match rt {
            "docker" => "docker",
            "cri-containerd" => "containerd",
            "crio" => "cri-o",
            _ => return None,
        };
        return Some((runtime, id));
    }
    None
}

/// `pod<uid>` (cgroupfs driver) or `kubepods-<qos>-pod<uid with _>.slice` (systemd driver).
fn pod_uid(seg: &str) -> Option<String> {
    let body = seg.strip_suffix(".slice").unwrap_or(seg);
    let at = body.rfind("pod")?;
    let uid = body[at + 3..].replace('_', "-");
    let ok = uid.len() == 36
        && uid.bytes().enumerate().all(|(i, b)| {
            if [8, 13, 18, 23].contains(&i) {
                b == b'-'
            } else {
                b.is_ascii_hexdigit()
            }
        });
    ok.then_some(uid)
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "3f4e1c2b9a8d7e6f5a4b3c2d1e0f9a8b7c6d5e4f3a2b1c0d9e8f7a6b5c4d3e2f";
    const UID: &str = "1d2c3b4a-5e6f-4a0b-9c8d-7e6f5a4b3c2d";

    #[test]
    fn systemd_units() {
        let w = Workload::from_path("/system.slice/nginx.service").unwrap();
        assert_eq!(w.unit.as_deref(), Some("nginx.service"));
        assert_eq!(w.container_id, None);
        let w = Workload::from_path("/system.slice/foo.service/payload").unwrap();
        assert_eq!(w.unit.as_deref(), Some("foo.service"));
        let w = Workload::from_path("/user.slice/user-1000.slice/session-2.scope").unwrap();
        assert_eq!(w.unit.as_deref(), Some("session-2.scope"));
        assert_eq!(Workload::from_path("/"), None);
        assert_eq!(Workload::from_path("/user.slice"), None);
        // This repository's own test machines: an opaque 32-hex memory cgroup names nothing.
        assert_eq!(
            Workload::from_path("/process_api/63bf286ed0b74780c93190e35760d321"),
            None
        );
    }

    #[test]
    fn containers_by_runtime_and_driver() {
        for (path, runtime) in [
            (format!("/system.slice/docker-{ID}.scope"), "docker"),
            (format!("/docker/{ID}"), "docker"),
            (
                format!("/system.slice/cri-containerd-{ID}.scope"),
                "containerd",
            ),
            (
                format!("/machine.slice/libpod-{ID}.scope/container"),
                "podman",
            ),
            (format!("/system.slice/crio-{ID}.scope"), "cri-o"),
        ] {
            let w = Workload::from_path(&path).unwrap_or_else(|| panic!("{path}"));
            assert_eq!(w.container_id.as_deref(), Some(ID), "{path}");
            assert_eq!(w.container_runtime.as_deref(), Some(runtime), "{path}");
            assert_eq!(w.unit, None, "a container's scope is not its unit: {path}");
            assert_eq!(w.container_short(), Some(&ID[..12]));
        }
    }

    #[test]
    fn kubernetes_pods_both_drivers() {
        let systemd = format!(
            "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{}.slice/cri-containerd-{ID}.scope",
            UID.replace('-', "_")
        );
        let w = Workload::from_path(&systemd).unwrap();
        assert_eq!(w.pod_uid.as_deref(), Some(UID));
        assert_eq!(w.pod_qos.as_deref(), Some("burstable"));
        assert_eq!(w.container_runtime.as_deref(), Some("containerd"));
        assert_eq!(w.container_id.as_deref(), Some(ID));
        let cgroupfs = format!("/kubepods/besteffort/pod{UID}/{ID}");
        let w = Workload::from_path(&cgroupfs).unwrap();
        assert_eq!(w.pod_uid.as_deref(), Some(UID));
        assert_eq!(w.pod_qos.as_deref(), Some("besteffort"));
        assert_eq!(w.container_runtime.as_deref(), Some("kubernetes"));
        assert_eq!(w.container_id.as_deref(), Some(ID));
        // A pod-level process (the pause container's cgroup not yet known): the pod alone.
        let w = Workload::from_path(&format!("/kubepods/pod{UID}")).unwrap();
        assert_eq!(w.pod_uid.as_deref(), Some(UID));
        assert_eq!(w.container_id, None);
    }

    #[test]
    fn v1_v2_and_hybrid_proc_cgroup() {
        // cgroup v2 only.
        let v2 = "0::/system.slice/redis-server.service\n";
        assert_eq!(
            Workload::from_proc_cgroup(v2).unwrap().unit.as_deref(),
            Some("redis-server.service")
        );
        // v1 only (no unified line): name=systemd wins over the controllers.
        let v1 = format!(
            "12:memory:/docker/{ID}\n11:pids:/docker/{ID}\n1:name=systemd:/system.slice/docker-{ID}.scope\n"
        );
        let w = Workload::from_proc_cgroup(&v1).unwrap();
        assert_eq!(w.container_id.as_deref(), Some(ID));
        assert_eq!(w.container_runtime.as_deref(), Some("docker"));
        // Hybrid with an empty unified path (this repository's test machines): the memory
        // controller's path is used.
        let hybrid = format!("9:name=systemd:/\n4:memory:/docker/{ID}\n0::/\n");
        let w = Workload::from_proc_cgroup(&hybrid).unwrap();
        assert_eq!(w.container_id.as_deref(), Some(ID));
        // Hybrid with the unit on the unified hierarchy and an opaque memory path.
        let hybrid = "9:name=systemd:/\n4:memory:/process_api/63bf286ed0b74780c93190e35760d321\n0::/system.slice/tracer-test.service\n";
        assert_eq!(
            Workload::from_proc_cgroup(hybrid).unwrap().unit.as_deref(),
            Some("tracer-test.service")
        );
        assert_eq!(Workload::from_proc_cgroup("9:name=systemd:/\n0::/\n"), None);
        assert_eq!(Workload::from_proc_cgroup("garbage"), None);
    }

    #[test]
    fn serialized_fields_are_only_the_known_ones() {
        let w = Workload {
            unit: Some("a.service".into()),
            ..Workload::default()
        };
        assert_eq!(
            serde_json::to_string(&w).unwrap(),
            r#"{"unit":"a.service"}"#
        );
        let back: Workload = serde_json::from_str("{}").unwrap();
        assert!(back.is_empty());
    }
}
