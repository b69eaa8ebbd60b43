//! Pseudo-random numbers for the moments a test picks at random (when to kill a process),
//! without a rand dependency.

/// A pseudo-random number below `n`, from the clock and a fresh uuid.
pub fn random_below(n: u64) -> u64 {
    let nanos = u64::from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock after 1970")
            .subsec_nanos(),
    );
    (nanos ^ uuid::Uuid::new_v4().as_u64_pair().0) % n
}
