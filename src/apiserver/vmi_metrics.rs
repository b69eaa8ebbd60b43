//! KubeVirt's VMI metrics, under KubeVirt's names and labels, rendered at scrape time:
//!
//! - `kubevirt_vmi_phase_count{node,phase,os,workload,flavor}` (gauge): VMIs per node
//!   and phase, from the store (`os`, `workload`, `flavor` from the
//!   `vm.kubevirt.io/*` annotations, `<none>` when absent, as virt-controller does);
//! - per running VM, from its VMM ([`crate::vmm::stats`]):
//!   `kubevirt_vmi_vcpu_seconds_total{id,state}`, `kubevirt_vmi_memory_resident_bytes`,
//!   `kubevirt_vmi_network_{receive,transmit}_{bytes,packets}_total{interface}`,
//!   `kubevirt_vmi_storage_{read,write}_traffic_bytes_total{drive}` and
//!   `kubevirt_vmi_storage_iops_{read,write}_total{drive}`, each also labelled
//!   `node`, `namespace`, `name`.

use crate::store::{ListOptions, Objects};
use crate::vmm::stats::{Registry, VmSample};
use serde_json::Value;
use std::collections::BTreeMap;
use std::fmt::Write;

/// Escapes a label value for the text formats.
fn esc(v: &str) -> String {
    v.replace('\\', r"\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn annotation<'a>(vmi: &'a Value, key: &str) -> &'a str {
    vmi["metadata"]["annotations"][key]
        .as_str()
        .filter(|s| !s.is_empty())
        .unwrap_or("<none>")
}

/// The phase counts over the VMIs in `objects`.
pub fn phase_counts(objects: &Objects) -> String {
    let Some(def) = api::resource::find("kubevirt.io", "v1", "virtualmachineinstances") else {
        return String::new();
    };
    match objects.list(def, None, &ListOptions::default()) {
        Ok(l) => phase_counts_of(&l.items),
        Err(e) => {
            tracing::warn!("listing VMIs for /metrics: {}", e.message);
            String::new()
        }
    }
}

/// The phase counts over `items` (VMI objects).
fn phase_counts_of(items: &[Value]) -> String {
    let mut counts: BTreeMap<[String; 5], u64> = BTreeMap::new();
    for vmi in items {
        let node = vmi["status"]["nodeName"].as_str().unwrap_or("");
        let phase = vmi["status"]["phase"]
            .as_str()
            .filter(|p| !p.is_empty())
            .unwrap_or("Pending")
            .to_ascii_lowercase();
        let key = [
            node.to_string(),
            phase,
            annotation(vmi, "vm.kubevirt.io/os").to_string(),
            annotation(vmi, "vm.kubevirt.io/workload").to_string(),
            annotation(vmi, "vm.kubevirt.io/flavor").to_string(),
        ];
        *counts.entry(key).or_default() += 1;
    }
    let mut out = String::from(
        "# HELP kubevirt_vmi_phase_count Sum of VMIs per phase and node\n\
         # TYPE kubevirt_vmi_phase_count gauge\n",
    );
    for ([node, phase, os, workload, flavor], n) in counts {
        let _ = writeln!(
            out,
            "kubevirt_vmi_phase_count{{node=\"{}\",phase=\"{}\",os=\"{}\",workload=\"{}\",flavor=\"{}\"}} {n}",
            esc(&node),
            esc(&phase),
            esc(&os),
            esc(&workload),
            esc(&flavor)
        );
    }
    out
}

/// One metric family being written: HELP and TYPE once, then samples.
struct Family {
    name: &'static str,
    counter: bool,
    samples: String,
}

impl Family {
    fn new(name: &'static str, counter: bool) -> Self {
        Self {
            name,
            counter,
            samples: String::new(),
        }
    }

    fn sample(&mut self, labels: &str, value: impl std::fmt::Display) {
        let suffix = if self.counter { "_total" } else { "" };
        let _ = writeln!(self.samples, "{}{suffix}{{{labels}}} {value}", self.name);
    }

    fn render(&self, help: &str, out: &mut String) {
        if self.samples.is_empty() {
            return;
        }
        let kind = if self.counter { "counter" } else { "gauge" };
        let _ = writeln!(out, "# HELP {} {help}", self.name);
        let _ = writeln!(out, "# TYPE {} {kind}", self.name);
        out.push_str(&self.samples);
    }
}

/// The per-VM families over every VM in `registry`.
pub fn vm_samples(registry: &Registry) -> String {
    let mut vcpu = Family::new("kubevirt_vmi_vcpu_seconds", true);
    let mut rss = Family::new("kubevirt_vmi_memory_resident_bytes", false);
    let mut rx_bytes = Family::new("kubevirt_vmi_network_receive_bytes", true);
    let mut tx_bytes = Family::new("kubevirt_vmi_network_transmit_bytes", true);
    let mut rx_packets = Family::new("kubevirt_vmi_network_receive_packets", true);
    let mut tx_packets = Family::new("kubevirt_vmi_network_transmit_packets", true);
    let mut rd_bytes = Family::new("kubevirt_vmi_storage_read_traffic_bytes", true);
    let mut wr_bytes = Family::new("kubevirt_vmi_storage_write_traffic_bytes", true);
    let mut rd_ops = Family::new("kubevirt_vmi_storage_iops_read", true);
    let mut wr_ops = Family::new("kubevirt_vmi_storage_iops_write", true);
    for (key, sample) in registry.samples() {
        let VmSample {
            vcpu_seconds,
            memory_resident_bytes,
            nets,
            drives,
        } = sample;
        let base = format!(
            "node=\"{}\",namespace=\"{}\",name=\"{}\"",
            esc(&key.node),
            esc(&key.namespace),
            esc(&key.name)
        );
        for (id, secs) in vcpu_seconds {
            vcpu.sample(&format!("{base},id=\"{id}\",state=\"running\""), secs);
        }
        rss.sample(&base, memory_resident_bytes);
        for n in nets {
            let l = format!("{base},interface=\"{}\"", esc(&n.interface));
            rx_bytes.sample(&l, n.rx_bytes);
            tx_bytes.sample(&l, n.tx_bytes);
            rx_packets.sample(&l, n.rx_packets);
            tx_packets.sample(&l, n.tx_packets);
        }
        for d in drives {
            let l = format!("{base},drive=\"{}\"", esc(&d.drive));
            rd_bytes.sample(&l, d.read_bytes);
            wr_bytes.sample(&l, d.write_bytes);
            rd_ops.sample(&l, d.read_ops);
            wr_ops.sample(&l, d.write_ops);
        }
    }
    let mut out = String::new();
    vcpu.render("Total amount of time spent in each vCPU state", &mut out);
    rss.render("Resident set size of the guest memory in bytes", &mut out);
    rx_bytes.render("Total network traffic received in bytes", &mut out);
    tx_bytes.render("Total network traffic transmitted in bytes", &mut out);
    rx_packets.render("Total network traffic received packets", &mut out);
    tx_packets.render("Total network traffic transmitted packets", &mut out);
    rd_bytes.render("Total number of bytes read from storage", &mut out);
    wr_bytes.render("Total number of written bytes", &mut out);
    rd_ops.render("Total number of I/O read operations", &mut out);
    wr_ops.render("Total number of I/O write operations", &mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn phase_counts_group_by_node_and_phase() {
        let items: Vec<Value> = [("n1", "Running"), ("n1", "Running"), ("", "")]
            .iter()
            .map(|(node, phase)| {
                let mut vmi = json!({
                    "metadata": {"annotations": {"vm.kubevirt.io/os": "linux"}},
                });
                if !phase.is_empty() {
                    vmi["status"] = json!({"nodeName": node, "phase": phase});
                }
                vmi
            })
            .collect();
        let text = phase_counts_of(&items);
        assert!(text.contains("kubevirt_vmi_phase_count{node=\"n1\",phase=\"running\",os=\"linux\",workload=\"<none>\",flavor=\"<none>\"} 2"), "{text}");
        assert!(text.contains("phase=\"pending\""), "{text}");
    }

    #[test]
    fn the_dashboard_uses_only_series_we_serve() {
        use crate::vmm::stats::{Registry, VmKey, VmStats};
        use std::sync::Arc;
        let stats = VmStats::new(None);
        stats.add_net("default", Arc::default());
        stats.add_drive("rootdisk", Arc::default());
        stats.vcpu_started(0);
        let reg = Registry::new();
        reg.insert(
            VmKey {
                namespace: "default".into(),
                name: "vm1".into(),
                node: "n1".into(),
            },
            Arc::new(stats),
        );
        let served = crate::apiserver::metrics::classic_text(&format!(
            "{}{}{}",
            phase_counts_of(&[json!({"status": {"phase": "Running"}})]),
            vm_samples(&reg),
            crate::apiserver::metrics::Metrics::new().encode()
        ));
        let dashboard = include_str!("../../deploy/grafana-dashboard.json");
        let mut names = Vec::new();
        for prefix in ["kubevirt_vmi_", "apiserver_request"] {
            let mut rest = dashboard;
            while let Some(at) = rest.find(prefix) {
                let name: String = rest[at..]
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                rest = &rest[at + name.len()..];
                names.push(name);
            }
        }
        assert!(names.len() > 8, "{names:?}");
        for name in names {
            // Histograms are served as their _bucket/_sum/_count series.
            let family = name.trim_end_matches("_bucket");
            assert!(
                served.contains(&format!("# TYPE {family} ")),
                "{name} is not served:\n{served}"
            );
        }
    }
}
