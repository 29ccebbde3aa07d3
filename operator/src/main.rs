//! The operator binary. The reconciler is not written yet: this says so and exits
//! non-zero rather than pretending to run.
fn main() {
    eprintln!(
        "switchboard-operator: not implemented yet (the RealtimeCluster reconciler is still to be built)"
    );
    std::process::exit(2);
}
