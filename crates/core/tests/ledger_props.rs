//! Property tests of the ledger's invariants.

use proptest::prelude::*;
use suanli_core::{AllocId, GpuMask, Ledger, ModelSet, NodeSpec, Request, MILLI_PER_GPU};

fn cluster() -> Ledger {
    let specs = (0..4)
        .map(|i| NodeSpec {
            name: format!("n{i}"),
            cpu_milli: 16_000,
            memory_mib: 65_536,
            gpus: [0u8, 1, 4, 8][i],
            model: if i == 0 {
                None
            } else {
                Some(suanli_core::ModelId(0))
            },
        })
        .collect();
    Ledger::new(specs)
}

#[derive(Debug, Clone)]
enum Op {
    Alloc {
        node: u32,
        cpu: u64,
        mem: u64,
        num_gpu: u32,
        milli: u32,
        mask: u16,
    },
    Release(usize),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (0u32..5, 0u64..9000, 0u64..40000, 0u32..4, 1u32..=1000, any::<u16>()).prop_map(
            |(node, cpu, mem, num_gpu, milli, mask)| Op::Alloc { node, cpu, mem, num_gpu, milli, mask }
        ),
        1 => (0usize..64).prop_map(Op::Release),
    ]
}

proptest! {
    #[test]
    fn invariants_hold_under_random_operations(ops in prop::collection::vec(op(), 1..200)) {
        let mut l = cluster();
        let mut live: Vec<(AllocId, Request, GpuMask)> = Vec::new();
        for o in ops {
            match o {
                Op::Alloc { node, cpu, mem, num_gpu, milli, mask } => {
                    let milli = if num_gpu >= 2 { 1000 } else if num_gpu == 0 { 0 } else { milli };
                    let req = Request::new(cpu, mem, num_gpu, milli, ModelSet::ANY).unwrap();
                    let before = l.clone();
                    match l.allocate(&req, node, GpuMask(mask)) {
                        Ok(id) => live.push((id, req, GpuMask(mask))),
                        Err(_) => {
                            // All-or-nothing: a refused allocation changes nothing.
                            prop_assert_eq!(before.states(), l.states());
                        }
                    }
                }
                Op::Release(k) => {
                    if !live.is_empty() {
                        let (id, req, mask) = live.remove(k % live.len());
                        let a = l.release(id).unwrap();
                        prop_assert_eq!(a.cpu_milli, req.cpu_milli);
                        prop_assert_eq!(a.memory_mib, req.memory_mib);
                        prop_assert_eq!(a.gpus, mask);
                        prop_assert_eq!(a.gpu_milli, req.gpu_milli);
                        prop_assert!(l.release(id).is_err(), "double release must fail");
                    }
                }
            }
            l.check().map_err(|e| TestCaseError::fail(e.to_string()))?;
            for s in l.states() {
                prop_assert!(s.gpu_left().iter().all(|&g| g <= MILLI_PER_GPU));
            }
        }
        // Releasing everything returns the cluster to empty.
        for (id, _, _) in live { l.release(id).unwrap(); }
        let empty = cluster();
        for (a, b) in l.states().iter().zip(empty.states()) {
            prop_assert_eq!((a.cpu_free, a.mem_free, a.gpu_left()), (b.cpu_free, b.mem_free, b.gpu_left()));
        }
        prop_assert_eq!(l.allocated_gpu_milli(), 0);
    }
}

#[test]
fn refuses_over_allocation_of_a_device() {
    let mut l = cluster();
    let share = Request::new(1000, 1, 1, 600, ModelSet::ANY).unwrap();
    l.allocate(&share, 1, GpuMask::single(0)).unwrap();
    let err = l.allocate(&share, 1, GpuMask::single(0)).unwrap_err();
    assert!(
        err.to_string()
            .contains("gpu_milli requested 600, free 400"),
        "{err}"
    );
}

#[test]
fn request_validation_names_the_problem() {
    assert!(Request::new(0, 0, 2, 500, ModelSet::ANY)
        .unwrap_err()
        .to_string()
        .contains("whole devices"));
    assert!(Request::new(0, 0, 0, 5, ModelSet::ANY).is_err());
    assert!(Request::new(0, 0, 1, 0, ModelSet::ANY).is_err());
    assert!(Request::new(0, 0, 17, 1000, ModelSet::ANY).is_err());
}
