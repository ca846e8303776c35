//! Requests for the writes of an [`Operation`], and the checks done before anything is sent.

use super::constants::*;
use super::dest::{dest_attrs, dest_id_attrs};
use super::message::{IpvsAttr, IpvsMessage};
use super::service::{service_attrs, service_id_attrs};
use crate::{ErrorKind, Operation, RealServer, VirtualServer};

/// The kernel's `IP_VS_SCHEDNAME_MAXLEN` / `IP_VS_PENAME_MAXLEN`, NUL included.
const NAME_MAX: usize = 16;

/// The message that performs `op`.
pub fn operation_message(op: &Operation) -> IpvsMessage {
    let svc = |attrs| IpvsAttr::Service(attrs);
    match op {
        Operation::AddVirtualServer(vs) => IpvsMessage::new(IPVS_CMD_NEW_SERVICE, vec![svc(service_attrs(vs))]),
        Operation::UpdateVirtualServer(vs) => IpvsMessage::new(IPVS_CMD_SET_SERVICE, vec![svc(service_attrs(vs))]),
        Operation::DeleteVirtualServer(id) => IpvsMessage::new(IPVS_CMD_DEL_SERVICE, vec![svc(service_id_attrs(id))]),
        Operation::AddRealServer(vs, rs) => {
            IpvsMessage::new(IPVS_CMD_NEW_DEST, vec![svc(service_id_attrs(vs)), IpvsAttr::Dest(dest_attrs(rs))])
        }
        Operation::UpdateRealServer(vs, rs) => {
            IpvsMessage::new(IPVS_CMD_SET_DEST, vec![svc(service_id_attrs(vs)), IpvsAttr::Dest(dest_attrs(rs))])
        }
        Operation::DeleteRealServer(vs, rs) => {
            IpvsMessage::new(IPVS_CMD_DEL_DEST, vec![svc(service_id_attrs(vs)), IpvsAttr::Dest(dest_id_attrs(rs))])
        }
    }
}

/// Why `op` cannot be sent as is, if it cannot: names the kernel would refuse with `EINVAL`
/// anyway (too long, or with a NUL), and weights the kernel would read as negative.
pub fn check_operation(op: &Operation) -> Result<(), (ErrorKind, String)> {
    match op {
        Operation::AddVirtualServer(vs) | Operation::UpdateVirtualServer(vs) => {
            check_virtual_server(vs).map_err(|m| (ErrorKind::Invalid, m))
        }
        Operation::AddRealServer(_, rs) | Operation::UpdateRealServer(_, rs) => {
            check_real_server(rs).map_err(|m| (ErrorKind::OutOfRange, m))
        }
        Operation::DeleteVirtualServer(_) | Operation::DeleteRealServer(..) => Ok(()),
    }
}

fn check_name(what: &str, name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() >= NAME_MAX || name.contains('\0') {
        return Err(format!("{what} name `{}` is not 1 to {} bytes without NUL", name.escape_debug(), NAME_MAX - 1));
    }
    Ok(())
}

fn check_virtual_server(vs: &VirtualServer) -> Result<(), String> {
    check_name("scheduler", &vs.scheduler)?;
    if let Some(pe) = &vs.pe_name {
        check_name("persistence engine", pe)?;
    }
    Ok(())
}

fn check_real_server(rs: &RealServer) -> Result<(), String> {
    if rs.weight > i32::MAX as u32 {
        return Err(format!("weight {} is above the kernel's maximum {}", rs.weight, i32::MAX));
    }
    Ok(())
}
