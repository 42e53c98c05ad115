//! Free loopback ports for the stack's listeners.

use std::net::TcpListener;

use crate::Error;

/// `n` distinct loopback ports the kernel reports free: all are held open
/// together so none is handed out twice, then released for the components.
pub fn free_ports<const N: usize>() -> Result<[u16; N], Error> {
    let mut held = Vec::with_capacity(N);
    let mut ports = [0u16; N];
    for port in &mut ports {
        let l = TcpListener::bind("127.0.0.1:0")
            .map_err(|e| Error::io(std::path::Path::new("127.0.0.1:0"), e))?;
        *port = l
            .local_addr()
            .map_err(|e| Error::io(std::path::Path::new("127.0.0.1:0"), e))?
            .port();
        held.push(l);
    }
    Ok(ports)
}

#[cfg(test)]
mod tests {
    #[test]
    fn ports_are_distinct_and_nonzero() {
        let ports = super::free_ports::<8>().expect("ports");
        let mut sorted = ports.to_vec();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(sorted.len(), 8);
        assert!(ports.iter().all(|p| *p > 0));
    }
}
