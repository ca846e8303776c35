//! The daemon's [`Filter`]: the `netfilter` crate's table (its skeleton by the `nft` binary,
//! its elements over nfnetlink).

use ipnet::IpNet;
use netfilter::{FilterConfig, FilterState, LocalTraffic, Netfilter, Nft, NftError};

use crate::blocking::blocking;
use crate::filter::{Filter, FilterWork};
use crate::filter_state::filter_config;

/// The table `kube-ipvs-proxy`, created or adopted at start.
pub struct NftFilter {
    netfilter: Netfilter,
}

impl NftFilter {
    /// Creates or adopts the table with the pod prefixes (the cluster's or the node's), the
    /// masquerade mark bit and how pods are told from the rest; where the host's iptables
    /// `FORWARD` policy drops, lets service traffic through it ([`netfilter::accept_forwarded`]).
    pub fn start(pod_prefixes: &[IpNet], masquerade_bit: u8, local: LocalTraffic) -> Result<NftFilter, NftError> {
        let config = FilterConfig { local, ..filter_config(pod_prefixes, masquerade_bit) };
        let netfilter = Netfilter::start(Nft::new(), config)?;
        // Where the host's FORWARD policy drops, the replies of masqueraded service traffic
        // need an accept there too (upstream's KUBE-FORWARD); retried with the table's setup.
        let mark = 1u32.checked_shl(u32::from(masquerade_bit)).unwrap_or(0);
        for program in netfilter::accept_forwarded(mark)? {
            tracing::info!(
                "{program}: the FORWARD policy drops; service traffic accepted in chain {}",
                netfilter::FORWARD_CHAIN
            );
        }
        Ok(NftFilter { netfilter })
    }
}

impl Filter for NftFilter {
    fn known(&self) -> Option<&FilterState> {
        self.netfilter.known()
    }

    fn set_digest(&self, set: &str) -> Option<u64> {
        self.netfilter.set_digest(set)
    }

    /// The kernel's set itself, listed and compared element by element: what was lost without
    /// a notification (none is known to be) is repaired too.
    fn repair_set(&mut self, set: &str) -> Result<usize, NftError> {
        blocking(|| self.netfilter.verify_set(set))
    }

    fn apply(&mut self, work: FilterWork) -> Result<usize, NftError> {
        blocking(|| self.write(work))
    }

    fn settled_generation(&self) -> Option<u32> {
        self.netfilter.settled_generation().flatten()
    }
}

impl NftFilter {
    fn write(&mut self, work: FilterWork) -> Result<usize, NftError> {
        match work {
            FilterWork::Full(state) => {
                // A full work (the first sync, then each round's sweep) writes only what differs
                // from what this process applied: nothing on an idle node. Edits behind the
                // proxy's back are repaired when they happen (the table monitor, `Rebuild`), and
                // after a failed write the keeper rewrites the sets whole.
                let n = state.elements().len();
                self.netfilter.resync(state).map(|()| n)
            }
            FilterWork::Only(updates) => self.netfilter.update(updates),
            FilterWork::Rebuild(state) => {
                let n = state.elements().len();
                self.netfilter.rebuild(state).map(|()| n)
            }
        }
    }
}
