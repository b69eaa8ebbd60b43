//! The scheduler's view of the cluster at one instant: each node with what it can still
//! give, and each VMI already placed on a node (the inputs of every filter and score).

use super::request::{self, quantity_of, Request};
use super::selector::Labels;
use api::core::node::Node;
use api::kubevirt::virtualmachineinstance::VirtualMachineInstance;

/// One node and what the VMIs placed on it already use.
#[derive(Debug)]
pub struct NodeState<'a> {
    /// The node object.
    pub node: &'a Node,
    /// Its name.
    pub name: &'a str,
    /// Its labels.
    pub labels: Labels,
    /// `status.allocatable` cpu (millicores) and memory (bytes); 0 when absent.
    pub allocatable: Request,
    /// The sum of the requests of the VMIs placed on it.
    pub used: Request,
    /// How many VMIs are placed on it.
    pub vmi_count: usize,
}

/// A VMI bound to a node.
#[derive(Debug)]
pub struct Placed<'a> {
    /// The VMI.
    pub vmi: &'a VirtualMachineInstance,
    /// Its namespace ("" when none).
    pub namespace: &'a str,
    /// Its labels.
    pub labels: Labels,
    /// The index of its node in [`Cluster::nodes`].
    pub node: usize,
}

/// Nodes and placed VMIs.
#[derive(Debug)]
pub struct Cluster<'a> {
    /// Every node, in the order given.
    pub nodes: Vec<NodeState<'a>>,
    /// Every VMI on a known node that is not finished, except the one being scheduled.
    pub placed: Vec<Placed<'a>>,
}

/// The node a VMI is bound to, if any.
pub fn node_of(vmi: &VirtualMachineInstance) -> Option<&str> {
    vmi.status
        .as_ref()
        .and_then(|s| s.node_name.as_deref())
        .filter(|n| !n.is_empty())
}

fn same_object(a: &VirtualMachineInstance, b: &VirtualMachineInstance) -> bool {
    match (&a.metadata.uid, &b.metadata.uid) {
        (Some(x), Some(y)) => x == y,
        _ => a.metadata.namespace == b.metadata.namespace && a.metadata.name == b.metadata.name,
    }
}

impl<'a> Cluster<'a> {
    /// Builds the view for scheduling `vmi` among `nodes`, given every VMI in `vmis`.
    pub fn new(
        vmi: &VirtualMachineInstance,
        nodes: &'a [Node],
        vmis: &'a [VirtualMachineInstance],
    ) -> Self {
        let mut states: Vec<NodeState<'a>> = nodes
            .iter()
            .map(|node| {
                let allocatable = node.status.as_ref().and_then(|s| s.allocatable.as_ref());
                NodeState {
                    node,
                    name: node.metadata.name.as_deref().unwrap_or(""),
                    labels: node.metadata.labels.clone().unwrap_or_default(),
                    allocatable: Request {
                        milli_cpu: quantity_of(allocatable, "cpu", |p| p.milli_value())
                            .unwrap_or(0),
                        memory: quantity_of(allocatable, "memory", |p| p.value()).unwrap_or(0),
                    },
                    used: Request::default(),
                    vmi_count: 0,
                }
            })
            .collect();
        let mut placed = Vec::new();
        for other in vmis {
            if same_object(vmi, other) {
                continue;
            }
            let finished = other
                .status
                .as_ref()
                .and_then(|s| s.phase)
                .is_some_and(|p| p.is_final());
            let Some(node_name) = node_of(other).filter(|_| !finished) else {
                continue;
            };
            let Some(index) = states.iter().position(|n| n.name == node_name) else {
                continue;
            };
            let state = &mut states[index];
            state.used = state.used.plus(request::of(other));
            state.vmi_count += 1;
            placed.push(Placed {
                vmi: other,
                namespace: other.metadata.namespace.as_deref().unwrap_or(""),
                labels: other.metadata.labels.clone().unwrap_or_default(),
                node: index,
            });
        }
        Cluster {
            nodes: states,
            placed,
        }
    }
}
