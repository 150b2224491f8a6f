#!/bin/bash
# Brings a rendered /etc/network/interfaces up with ifupdown against a real
# Open vSwitch, inside a network namespace and a mount namespace of its own,
# then prints what OVS and the kernel report. The machine's own network and
# OVS are never touched: the namespace has its own links, /etc/network
# (ip netns exec binds /etc/netns/<ns>/network there), /run/network and
# /run/openvswitch, and systemctl/service are stubbed so the hook cannot
# start the host's OVS service. OVS runs in userspace (no kernel datapath
# here), so bridges are created with datapath_type=netdev before ifup.
# Usage: ovs-ifup.sh INTERFACES-FILE   (as root)
set -euo pipefail
IFACES=$1
ns=imgforge-ovs-$$
work=$(mktemp -d)
cleanup() {
  ip netns exec $ns sh -c "kill \$(cat $work/run/ovs-vswitchd.pid) \$(cat $work/run/ovsdb-server.pid)" 2>/dev/null || true
  ip netns del $ns 2>/dev/null || true
  rm -rf "/etc/netns/$ns" "$work"
}
trap cleanup EXIT
ip netns add $ns
mkdir -p /etc/netns/$ns/network "$work/run" "$work/state"
cp -a /etc/network/. /etc/netns/$ns/network/
cp "$IFACES" /etc/netns/$ns/network/interfaces
export OVS_RUNDIR=$work/run OVS_LOGDIR=$work/run OVS_DBDIR=$work/run
in_ns() { ip netns exec $ns "$@"; }
in_ns ip link set lo up
in_ns ip link add eth0 type veth peer name eth0-peer
ovsdb-tool create $work/run/conf.db /usr/share/openvswitch/vswitch.ovsschema
in_ns ovsdb-server $work/run/conf.db --remote=punix:$work/run/db.sock --pidfile=$work/run/ovsdb-server.pid --detach --log-file=$work/run/ovsdb-server.log
in_ns ovs-vsctl --no-wait init
in_ns ovs-vswitchd unix:$work/run/db.sock --pidfile=$work/run/ovs-vswitchd.pid --detach --log-file=$work/run/ovs-vswitchd.log
# No kernel datapath here: the bridges run in OVS's userspace datapath.
for br in $(in_ns ifquery --list --allow=ovs); do
  in_ns ovs-vsctl --timeout=10 add-br "$br" -- set bridge "$br" datapath_type=netdev
done
in_ns unshare -m sh -c "
  mkdir -p /run/network /run/openvswitch
  mount -t tmpfs tmpfs /run/network
  mount --bind $work/run /run/openvswitch
  for tool in /bin/systemctl /usr/sbin/service; do [ -e \$tool ] && mount --bind /bin/true \$tool; done
  ifup -a --allow=ovs -v
" > $work/ifup.log 2>&1 || { cat $work/ifup.log; exit 1; }
echo "== ovs-vsctl show"
in_ns ovs-vsctl show
echo "== ip -br addr"
in_ns ip -br addr
echo "== ip route"
in_ns ip route
echo "== eth0 vlan_mode"
in_ns ovs-vsctl get port eth0 vlan_mode
echo "== vlan31 external-ids"
in_ns ovs-vsctl get interface vlan31 external-ids
