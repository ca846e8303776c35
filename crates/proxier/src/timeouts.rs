//! The IPVS connection timeouts set at start. Only what differs from the kernel's is written,
//! so that a restart with an unchanged configuration makes no kernel write.

use ipvs::{Client, Timeouts};

/// What to write so that the kernel holds `wanted` (a 0 field: keep the kernel's), given that it
/// holds `current`: the differing fields, 0 elsewhere (a 0 in a write leaves that timeout
/// alone). `None` when the kernel already holds `wanted`.
fn to_write(current: &Timeouts, wanted: &Timeouts) -> Option<Timeouts> {
    let field = |current: u32, wanted: u32| if wanted != current { wanted } else { 0 };
    let write = Timeouts {
        tcp: field(current.tcp, wanted.tcp),
        tcp_fin: field(current.tcp_fin, wanted.tcp_fin),
        udp: field(current.udp, wanted.udp),
    };
    (write != Timeouts::default()).then_some(write)
}

/// Brings the kernel's timeouts to `wanted`. Failures are warnings: IPVS works with the
/// kernel's own timeouts. When they cannot be read, every configured one is written.
pub async fn ensure_timeouts(client: &Client, wanted: &Timeouts) {
    let current = client.timeouts().await.unwrap_or_else(|e| {
        tracing::warn!("cannot read the IPVS timeouts, writing the configured ones: {e}");
        Timeouts::default()
    });
    let Some(write) = to_write(&current, wanted) else {
        tracing::info!(tcp = current.tcp, tcp_fin = current.tcp_fin, udp = current.udp, "IPVS timeouts already set");
        return;
    };
    match client.set_timeouts(&write).await {
        Ok(()) => tracing::info!(tcp = wanted.tcp, tcp_fin = wanted.tcp_fin, udp = wanted.udp, "IPVS timeouts set"),
        Err(e) => tracing::warn!("cannot set the IPVS timeouts: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_only_the_differing_timeouts() {
        let t = |tcp, tcp_fin, udp| Timeouts { tcp, tcp_fin, udp };
        // (kernel's, configured, written)
        let cases = [
            (t(900, 120, 300), t(900, 120, 300), None),
            (t(900, 120, 300), t(900, 0, 0), None),
            (t(900, 120, 300), t(0, 0, 0), None),
            (t(900, 120, 300), t(600, 0, 0), Some(t(600, 0, 0))),
            (t(900, 120, 300), t(900, 60, 30), Some(t(0, 60, 30))),
            // Unreadable: read as all zero, so every configured one is written.
            (t(0, 0, 0), t(900, 0, 30), Some(t(900, 0, 30))),
        ];
        for (i, (current, wanted, written)) in cases.into_iter().enumerate() {
            assert_eq!(to_write(&current, &wanted), written, "case {i}");
        }
    }
}
