//! The library's names, ids and statuses honour a format's width,
//! alignment and precision, as `str` does: `{:<10}` lines up a table.

use saga_core::{ExecutionId, ExecutionStatus, Name, Outcome, StepKind, StepStatus};

#[test]
fn width_alignment_and_precision_apply() {
    let name = Name::from("charge");
    assert_eq!(format!("[{name:<8}]"), "[charge  ]");
    assert_eq!(format!("[{name:>8}]"), "[  charge]");
    assert_eq!(format!("[{name:.3}]"), "[cha]");
    let id = ExecutionId::from("order-7");
    assert_eq!(format!("[{id:^9}]"), "[ order-7 ]");
    assert_eq!(
        format!("[{:<11}]", ExecutionStatus::Completed),
        "[completed  ]"
    );
    assert_eq!(format!("[{:<11}]", StepStatus::Failed), "[failed     ]");
    assert_eq!(format!("[{:>9}]", Outcome::Unknown), "[  unknown]");
    assert_eq!(format!("[{:<12}]", StepKind::Pivot), "[pivot       ]");
}
