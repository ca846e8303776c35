//! Numbers from the kernel's `include/uapi/linux/ip_vs.h`: commands, attribute ids, flag bits.
//!
//! Kept in one place so that every encoder and decoder agrees on them.

/// The generic netlink family name IPVS registers.
pub const IPVS_GENL_NAME: &str = "IPVS";
/// The family version the kernel speaks.
pub const IPVS_GENL_VERSION: u8 = 1;

/// `IPVS_CMD_NEW_SERVICE`.
pub const IPVS_CMD_NEW_SERVICE: u8 = 1;
/// `IPVS_CMD_SET_SERVICE`.
pub const IPVS_CMD_SET_SERVICE: u8 = 2;
/// `IPVS_CMD_DEL_SERVICE`.
pub const IPVS_CMD_DEL_SERVICE: u8 = 3;
/// `IPVS_CMD_GET_SERVICE`.
pub const IPVS_CMD_GET_SERVICE: u8 = 4;
/// `IPVS_CMD_NEW_DEST`.
pub const IPVS_CMD_NEW_DEST: u8 = 5;
/// `IPVS_CMD_SET_DEST`.
pub const IPVS_CMD_SET_DEST: u8 = 6;
/// `IPVS_CMD_DEL_DEST`.
pub const IPVS_CMD_DEL_DEST: u8 = 7;
/// `IPVS_CMD_GET_DEST`.
pub const IPVS_CMD_GET_DEST: u8 = 8;
/// `IPVS_CMD_SET_CONFIG`.
pub const IPVS_CMD_SET_CONFIG: u8 = 12;
/// `IPVS_CMD_GET_CONFIG`.
pub const IPVS_CMD_GET_CONFIG: u8 = 13;
/// `IPVS_CMD_SET_INFO`: the command of a `GET_INFO` reply.
pub const IPVS_CMD_SET_INFO: u8 = 14;
/// `IPVS_CMD_GET_INFO`.
pub const IPVS_CMD_GET_INFO: u8 = 15;
/// `IPVS_CMD_ZERO`.
pub const IPVS_CMD_ZERO: u8 = 16;
/// `IPVS_CMD_FLUSH`.
pub const IPVS_CMD_FLUSH: u8 = 17;

/// `IPVS_CMD_ATTR_SERVICE` (nested).
pub const IPVS_CMD_ATTR_SERVICE: u16 = 1;
/// `IPVS_CMD_ATTR_DEST` (nested).
pub const IPVS_CMD_ATTR_DEST: u16 = 2;
/// `IPVS_CMD_ATTR_TIMEOUT_TCP`.
pub const IPVS_CMD_ATTR_TIMEOUT_TCP: u16 = 4;
/// `IPVS_CMD_ATTR_TIMEOUT_TCP_FIN`.
pub const IPVS_CMD_ATTR_TIMEOUT_TCP_FIN: u16 = 5;
/// `IPVS_CMD_ATTR_TIMEOUT_UDP`.
pub const IPVS_CMD_ATTR_TIMEOUT_UDP: u16 = 6;

/// `IPVS_INFO_ATTR_VERSION` (top level of a `SET_INFO` message).
pub const IPVS_INFO_ATTR_VERSION: u16 = 1;
/// `IPVS_INFO_ATTR_CONN_TAB_SIZE` (top level of a `SET_INFO` message).
pub const IPVS_INFO_ATTR_CONN_TAB_SIZE: u16 = 2;

/// `IPVS_SVC_ATTR_AF`.
pub const IPVS_SVC_ATTR_AF: u16 = 1;
/// `IPVS_SVC_ATTR_PROTOCOL`.
pub const IPVS_SVC_ATTR_PROTOCOL: u16 = 2;
/// `IPVS_SVC_ATTR_ADDR`.
pub const IPVS_SVC_ATTR_ADDR: u16 = 3;
/// `IPVS_SVC_ATTR_PORT` (big-endian on the wire).
pub const IPVS_SVC_ATTR_PORT: u16 = 4;
/// `IPVS_SVC_ATTR_FWMARK`.
pub const IPVS_SVC_ATTR_FWMARK: u16 = 5;
/// `IPVS_SVC_ATTR_SCHED_NAME`.
pub const IPVS_SVC_ATTR_SCHED_NAME: u16 = 6;
/// `IPVS_SVC_ATTR_FLAGS` (`struct ip_vs_flags`).
pub const IPVS_SVC_ATTR_FLAGS: u16 = 7;
/// `IPVS_SVC_ATTR_TIMEOUT`.
pub const IPVS_SVC_ATTR_TIMEOUT: u16 = 8;
/// `IPVS_SVC_ATTR_NETMASK`.
pub const IPVS_SVC_ATTR_NETMASK: u16 = 9;
/// `IPVS_SVC_ATTR_STATS` (nested).
pub const IPVS_SVC_ATTR_STATS: u16 = 10;
/// `IPVS_SVC_ATTR_PE_NAME`.
pub const IPVS_SVC_ATTR_PE_NAME: u16 = 11;
/// `IPVS_SVC_ATTR_STATS64` (nested).
pub const IPVS_SVC_ATTR_STATS64: u16 = 12;

/// `IPVS_DEST_ATTR_ADDR`.
pub const IPVS_DEST_ATTR_ADDR: u16 = 1;
/// `IPVS_DEST_ATTR_PORT` (big-endian on the wire).
pub const IPVS_DEST_ATTR_PORT: u16 = 2;
/// `IPVS_DEST_ATTR_FWD_METHOD`.
pub const IPVS_DEST_ATTR_FWD_METHOD: u16 = 3;
/// `IPVS_DEST_ATTR_WEIGHT`.
pub const IPVS_DEST_ATTR_WEIGHT: u16 = 4;
/// `IPVS_DEST_ATTR_U_THRESH`.
pub const IPVS_DEST_ATTR_U_THRESH: u16 = 5;
/// `IPVS_DEST_ATTR_L_THRESH`.
pub const IPVS_DEST_ATTR_L_THRESH: u16 = 6;
/// `IPVS_DEST_ATTR_ACTIVE_CONNS`.
pub const IPVS_DEST_ATTR_ACTIVE_CONNS: u16 = 7;
/// `IPVS_DEST_ATTR_INACT_CONNS`.
pub const IPVS_DEST_ATTR_INACT_CONNS: u16 = 8;
/// `IPVS_DEST_ATTR_PERSIST_CONNS`.
pub const IPVS_DEST_ATTR_PERSIST_CONNS: u16 = 9;
/// `IPVS_DEST_ATTR_STATS` (nested).
pub const IPVS_DEST_ATTR_STATS: u16 = 10;
/// `IPVS_DEST_ATTR_ADDR_FAMILY`.
pub const IPVS_DEST_ATTR_ADDR_FAMILY: u16 = 11;
/// `IPVS_DEST_ATTR_STATS64` (nested).
pub const IPVS_DEST_ATTR_STATS64: u16 = 12;
/// `IPVS_DEST_ATTR_TUN_TYPE`.
pub const IPVS_DEST_ATTR_TUN_TYPE: u16 = 13;
/// `IPVS_DEST_ATTR_TUN_PORT` (big-endian on the wire).
pub const IPVS_DEST_ATTR_TUN_PORT: u16 = 14;
/// `IPVS_DEST_ATTR_TUN_FLAGS`.
pub const IPVS_DEST_ATTR_TUN_FLAGS: u16 = 15;

/// `IPVS_STATS_ATTR_CONNS`.
pub const IPVS_STATS_ATTR_CONNS: u16 = 1;
/// `IPVS_STATS_ATTR_INPKTS`.
pub const IPVS_STATS_ATTR_INPKTS: u16 = 2;
/// `IPVS_STATS_ATTR_OUTPKTS`.
pub const IPVS_STATS_ATTR_OUTPKTS: u16 = 3;
/// `IPVS_STATS_ATTR_INBYTES`.
pub const IPVS_STATS_ATTR_INBYTES: u16 = 4;
/// `IPVS_STATS_ATTR_OUTBYTES`.
pub const IPVS_STATS_ATTR_OUTBYTES: u16 = 5;
/// `IPVS_STATS_ATTR_CPS`.
pub const IPVS_STATS_ATTR_CPS: u16 = 6;
/// `IPVS_STATS_ATTR_INPPS`.
pub const IPVS_STATS_ATTR_INPPS: u16 = 7;
/// `IPVS_STATS_ATTR_OUTPPS`.
pub const IPVS_STATS_ATTR_OUTPPS: u16 = 8;
/// `IPVS_STATS_ATTR_INBPS`.
pub const IPVS_STATS_ATTR_INBPS: u16 = 9;
/// `IPVS_STATS_ATTR_OUTBPS`.
pub const IPVS_STATS_ATTR_OUTBPS: u16 = 10;

/// `AF_INET`.
pub const AF_INET: u16 = 2;
/// `AF_INET6`.
pub const AF_INET6: u16 = 10;

/// `IPPROTO_TCP`.
pub const IPPROTO_TCP: u16 = 6;
/// `IPPROTO_UDP`.
pub const IPPROTO_UDP: u16 = 17;
/// `IPPROTO_SCTP`.
pub const IPPROTO_SCTP: u16 = 132;

/// `IP_VS_CONN_F_FWD_MASK`: the bits of `FWD_METHOD` that name the method.
pub const IP_VS_CONN_F_FWD_MASK: u32 = 0x0007;
/// `IP_VS_CONN_F_MASQ`.
pub const IP_VS_CONN_F_MASQ: u32 = 0;
/// `IP_VS_CONN_F_LOCALNODE`.
pub const IP_VS_CONN_F_LOCALNODE: u32 = 1;
/// `IP_VS_CONN_F_TUNNEL`.
pub const IP_VS_CONN_F_TUNNEL: u32 = 2;
/// `IP_VS_CONN_F_DROUTE`.
pub const IP_VS_CONN_F_DROUTE: u32 = 3;

/// `IP_VS_CONN_F_TUNNEL_TYPE_IPIP`.
pub const IP_VS_CONN_F_TUNNEL_TYPE_IPIP: u8 = 0;
/// `IP_VS_CONN_F_TUNNEL_TYPE_GUE`.
pub const IP_VS_CONN_F_TUNNEL_TYPE_GUE: u8 = 1;
/// `IP_VS_CONN_F_TUNNEL_TYPE_GRE`.
pub const IP_VS_CONN_F_TUNNEL_TYPE_GRE: u8 = 2;
