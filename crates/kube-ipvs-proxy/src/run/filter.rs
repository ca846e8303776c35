//! The daemon's nftables side: `ipvs::netfilter::Netfilter` driven by the sync loop.

use ipvs::netfilter::{Netfilter, Nft, NftError};
use model::Cidr;
use watcher::{Filter, FilterWork};

/// The table `kube-ipvs-proxy`, created or adopted at start.
pub struct NftFilter {
    netfilter: Netfilter,
}

impl NftFilter {
    /// Creates or adopts the table with the cluster CIDRs and the masquerade mark bit.
    pub fn start(cluster_cidrs: &[Cidr], masquerade_bit: u8) -> Result<NftFilter, NftError> {
        let config = model::filter_config(cluster_cidrs, masquerade_bit);
        Ok(NftFilter {
            netfilter: Netfilter::start(Nft::new(), config)?,
        })
    }
}

impl Filter for NftFilter {
    fn apply(&mut self, work: FilterWork) -> Result<usize, String> {
        let result = match work {
            FilterWork::Full(state) => {
                // The periodic full reconcile rewrites the sets (one transaction), repairing
                // anything changed behind the proxy's back.
                let n = state.elements().len();
                self.netfilter.forget();
                self.netfilter.resync(state).map(|()| n)
            }
            FilterWork::Only(updates) => self.netfilter.update(updates),
        };
        result.map_err(|e| e.to_string())
    }
}
