#!/usr/bin/env bash
# netlab.sh builds the network lab of internal/netlab by hand, to try chatd, bizapi, chat or netcheck
# behind real faults (as root):
#
#   client 198.18.0.2 ── eth0 [box 198.18.0.1 | 198.19.0.1] eth1 ── server 198.19.0.2
#
#   scripts/netlab.sh up                      create the namespaces nl-client, nl-box, nl-server
#   scripts/netlab.sh run server chatd serve --dev --chat-listen 198.19.0.2:5222 \
#        --https-listen 198.19.0.2:443 --public-host 198.19.0.2
#   scripts/netlab.sh run client chat ...     run a program in a host
#   scripts/netlab.sh fault reject 5222       REJECT (TCP reset) port 5222 at the box
#   scripts/netlab.sh fault drop 443          DROP port 443 silently
#   scripts/netlab.sh fault loss 5            drop 5 % of forwarded packets
#   scripts/netlab.sh fault blackhole PORT    drop both directions of the client's connection from PORT
#   scripts/netlab.sh fault clear             remove the faults
#   scripts/netlab.sh idle 60                 forget connections idle for 60 s (conntrack)
#   scripts/netlab.sh show                    the box's rules and tracked connections
#   scripts/netlab.sh down                    remove everything
set -euo pipefail
P=${NETLAB_PREFIX:-nl}
C=$P-client B=$P-box S=$P-server
nsx() { local h=$1; shift; ip netns exec "$P-$h" "$@"; }
rules() {
	nsx box nft -f - <<NFT
table inet lab
delete table inet lab
table inet lab {
	chain forward {
		type filter hook forward priority filter; policy accept;
		ct state invalid drop
		$*
	}
}
NFT
}
case ${1:-} in
up)
	for h in $C $B $S; do ip netns add "$h"; ip -n "$h" link set lo up; done
	ip link add eth0 netns "$C" type veth peer name eth0 netns "$B"
	ip link add eth0 netns "$S" type veth peer name eth1 netns "$B"
	ip -n "$C" addr add 198.18.0.2/24 dev eth0 && ip -n "$C" link set eth0 up && ip -n "$C" route add default via 198.18.0.1
	ip -n "$S" addr add 198.19.0.2/24 dev eth0 && ip -n "$S" link set eth0 up && ip -n "$S" route add default via 198.19.0.1
	ip -n "$B" addr add 198.18.0.1/24 dev eth0 && ip -n "$B" addr add 198.19.0.1/24 dev eth1
	ip -n "$B" link set eth0 up && ip -n "$B" link set eth1 up
	nsx box sysctl -qw net.ipv4.ip_forward=1
	rules ""
	echo "lab up: client 198.18.0.2, box 198.18.0.1/198.19.0.1, server 198.19.0.2"
	;;
run) shift; h=$1; shift; nsx "$h" "$@" ;;
fault)
	case ${2:-} in
	reject) rules "tcp dport $3 reject with tcp reset" ;;
	drop) rules "tcp dport $3 drop" ;;
	loss) rules "numgen random mod 100 < $3 drop" ;;
	blackhole) rules "tcp sport $3 drop
		tcp dport $3 drop" ;;
	clear) rules "" ;;
	*) echo "fault reject|drop PORT, loss PERCENT, blackhole CLIENTPORT, clear" >&2; exit 2 ;;
	esac
	;;
idle) nsx box sysctl -qw "net.netfilter.nf_conntrack_tcp_timeout_established=$2" net.netfilter.nf_conntrack_tcp_loose=0 ;;
show) nsx box nft list ruleset; nsx box conntrack -L 2>/dev/null || true ;;
down) for h in $C $B $S; do ip netns del "$h" 2>/dev/null || true; done ;;
*) sed -n '2,20p' "$0" | sed 's/^# \{0,1\}//'; exit 2 ;;
esac
