#!/usr/bin/env bash
# Regenerates crates/molt-audit/tests/fixtures/real/ from the real tools on this machine:
# sshd -T, nft, iptables, ip6tables, ufw and fail2ban-client. Run as root:
#
#   sudo scripts/audit-fixtures.sh [OUT_DIR]
#
# Everything that changes state happens inside a network namespace made for the run and a
# private mount namespace in it, where /etc/ssh, /etc/ufw, /etc/default/ufw, /etc/fail2ban,
# /var/lib/fail2ban, /run and /var/log are private copies or empty tmpfs. The host's firewall
# and config files are never touched (the script checks the host ruleset before and after).
# crates/molt/tests/audit_fixtures.rs runs this into a temp dir and checks that the committed
# fixtures still parse to what the tools print today.
set -euo pipefail

repo="$(cd "$(dirname "$0")/.." && pwd)"
out="${1:-$repo/crates/molt-audit/tests/fixtures/real}"

die() {
  printf 'audit-fixtures: %s\n' "$*" >&2
  exit 1
}
[ "$(id -u)" = 0 ] || die "run as root (network and mount namespaces)"
for tool in sshd ssh-keygen nft iptables ip6tables ufw fail2ban-server fail2ban-client ip unshare; do
  command -v "$tool" >/dev/null 2>&1 ||
    die "$tool is missing: apt-get install openssh-server nftables iptables ufw fail2ban python3-systemd"
done

mkdir -p "$out"
out="$(cd "$out" && pwd)"
work="$(mktemp -d)"
ns="molt-fixtures-$$"
host_rules() { nft list ruleset; iptables -S; ip6tables -S; }
before="$(host_rules)"
cleanup() {
  ip netns del "$ns" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

mkdir -p "$work/ssh/sshd_config.d" "$work/ufw" "$work/fail2ban" "$work/fail2ban-lib"
cp -a /etc/ufw/. "$work/ufw/"
cp -p /etc/default/ufw "$work/default-ufw"
cp -a /etc/fail2ban/. "$work/fail2ban/"
ssh-keygen -q -t ed25519 -N '' -C molt-fixture -f "$work/ssh/ssh_host_ed25519_key"

ip netns add "$ns"
export OUT="$out" WORK="$work"
ip netns exec "$ns" unshare --mount --propagation private bash -euo pipefail -s <<'INNER'
mount -t tmpfs -o mode=0755 tmpfs /run
mount -t tmpfs -o mode=0755 tmpfs /var/log
mount --bind "$WORK/ssh" /etc/ssh
mount --bind "$WORK/ufw" /etc/ufw
mount --bind "$WORK/default-ufw" /etc/default/ufw
mount --bind "$WORK/fail2ban" /etc/fail2ban
mount --bind "$WORK/fail2ban-lib" /var/lib/fail2ban
ip link set lo up
export LC_ALL=C

# sshd -T: a Debian-shaped config (drop-ins first), password logins on and root allowed,
# then keys only with each PermitRootLogin spelling.
mkdir -p -m 0755 /run/sshd
sshd_config() {
  printf '%s\n' 'Include /etc/ssh/sshd_config.d/*.conf' \
    'HostKey /etc/ssh/ssh_host_ed25519_key' 'UsePAM yes' "$@" \
    'Subsystem sftp /usr/lib/openssh/sftp-server' >/etc/ssh/sshd_config
}
sshd_config 'PasswordAuthentication yes' 'KbdInteractiveAuthentication no' 'PermitRootLogin yes'
sshd -T >"$OUT/sshd_T_password_root_yes"
for root in prohibit-password without-password forced-commands-only no; do
  sshd_config 'PasswordAuthentication no' 'KbdInteractiveAuthentication no' "PermitRootLogin $root"
  sshd -T >"$OUT/sshd_T_keys_root_$root"
done
# Nothing set: OpenSSH's defaults (passwords on, root by key).
sshd_config
sshd -T >"$OUT/sshd_T_defaults"
# Without the privilege separation directory, sshd -T refuses (sshd never started here).
rmdir /run/sshd
sshd -T >"$OUT/sshd_T_no_privsep_dir" 2>&1 || true

# nft: a policy-accept inet table, then a policy-drop one that lets SSH in.
nft -f - <<'NFT'
table inet filter {
	chain input {
		type filter hook input priority filter; policy accept;
	}
	chain forward {
		type filter hook forward priority filter; policy accept;
	}
	chain output {
		type filter hook output priority filter; policy accept;
	}
}
NFT
nft list ruleset >"$OUT/nft_ruleset_accept"
nft flush ruleset
nft -f - <<'NFT'
table inet filter {
	chain input {
		type filter hook input priority filter; policy drop;
		ct state established,related accept
		ct state invalid drop
		iif "lo" accept
		meta l4proto { icmp, ipv6-icmp } accept
		tcp dport 22 accept comment "ssh"
	}
	chain forward {
		type filter hook forward priority filter; policy drop;
	}
	chain output {
		type filter hook output priority filter; policy accept;
	}
}
NFT
nft list ruleset >"$OUT/nft_ruleset_drop_ssh"
nft -a list ruleset >"$OUT/nft_ruleset_drop_ssh_handles"
nft flush ruleset

# iptables and ip6tables (the nf_tables backend Debian installs by default).
for ipt in iptables ip6tables; do
  "$ipt" -A INPUT -i lo -j ACCEPT
  "$ipt" -A INPUT -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT
  "$ipt" -A INPUT -p tcp -m tcp --dport 22 -m comment --comment ssh -j ACCEPT
  "$ipt" -A INPUT -p tcp -m multiport --dports 80,443 -j ACCEPT
done
iptables -P INPUT DROP
iptables -S >"$OUT/iptables_S_drop_ssh"
ip6tables -S >"$OUT/ip6tables_S_accept"
iptables -t nat -S >"$OUT/iptables_nat_S_empty"
nft list ruleset >"$OUT/nft_ruleset_iptables_nft"
iptables -F
iptables -P INPUT ACCEPT
ip6tables -F
nft flush ruleset

# ufw: inactive, then SSH allowed and default-deny enabled (the audit's remedy), numbered too.
ufw status verbose >"$OUT/ufw_status_inactive"
ufw allow 22/tcp >/dev/null
ufw allow from 10.0.0.0/8 to any port 18789 proto tcp comment gateway >/dev/null
ufw default deny incoming >/dev/null
ufw default allow outgoing >/dev/null
ufw enable >/dev/null
ufw status verbose >"$OUT/ufw_status_active_deny"
ufw status numbered >"$OUT/ufw_status_numbered"
iptables -S >"$OUT/iptables_S_ufw"
ip6tables -S >"$OUT/ip6tables_S_ufw"
nft list ruleset >"$OUT/nft_ruleset_ufw"
ufw disable >/dev/null
nft flush ruleset

# fail2ban: not running, then an sshd jail read from the journal (Debian 12 has no auth.log),
# then no jail at all.
fail2ban-client status >"$OUT/fail2ban_status_not_running" 2>&1 || true
sed -i -e 's/^[0-9-]* [0-9:,]* //' -e 's/\[[0-9]*\]/[PID]/' "$OUT/fail2ban_status_not_running"
f2b() {
  fail2ban-server -f -x start >/dev/null 2>&1 &
  for _ in $(seq 100); do
    fail2ban-client ping >/dev/null 2>&1 && return 0
    sleep 0.1
  done
  echo "fail2ban-server did not answer" >&2
  return 1
}
printf '[sshd]\nenabled = true\nbackend = systemd\n' >/etc/fail2ban/jail.d/sshd.local
f2b
fail2ban-client status >"$OUT/fail2ban_status_sshd"
fail2ban-client stop >/dev/null
wait
printf '[sshd]\nenabled = false\n' >/etc/fail2ban/jail.d/sshd.local
f2b
fail2ban-client status >"$OUT/fail2ban_status_no_jail"
fail2ban-client stop >/dev/null
wait
INNER

[ "$(host_rules)" = "$before" ] || die "the host's firewall rules changed during the run"

{
  echo "# Generated by scripts/audit-fixtures.sh; the tools that printed these files:"
  sshd -V 2>&1 | head -n1
  nft --version
  iptables -V
  ufw version | head -n1
  fail2ban-client --version | head -n1
  . /etc/os-release && echo "$PRETTY_NAME"
} >"$out/VERSIONS"
echo "audit-fixtures: wrote $(find "$out" -type f | wc -l) files to $out"
