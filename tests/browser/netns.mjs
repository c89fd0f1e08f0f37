// Network namespaces for the browser tests: a client host with several links to this machine,
// links that can be cut, and a Chromium that runs inside the namespace. Needs root, iproute2 and
// iptables (scripts/browser-deps.sh installs them). Everything is named with a `cf` prefix and
// removed by `teardown()`, also after a failed run (`setup()` removes leftovers first).
import { execFileSync } from 'node:child_process';
import { mkdtempSync, writeFileSync, chmodSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

function run(...argv) {
  return execFileSync(argv[0], argv.slice(1), { stdio: ['ignore', 'pipe', 'pipe'] }).toString();
}

function tryRun(...argv) {
  try { return run(...argv); } catch { return null; }
}

/** Why namespaces cannot be used here (not root, no `ip` or `iptables`), or null when they can. */
export function unavailable() {
  if (process.getuid?.() !== 0) return 'network namespaces need root';
  if (tryRun('ip', '-V') === null) return 'iproute2 (ip) is not installed';
  if (tryRun('iptables', '--version') === null) return 'iptables is not installed';
  return null;
}

/**
 * A client namespace `ns` joined to this machine by `links` veth pairs. Link `i` is
 * `cfc<i>` (client, 10.<net>.<i+1>.2/24) ↔ `cfs<i>` (this machine, 10.<net>.<i+1>.1/24). Inside the
 * namespace each address may leave only by its own link (strict source routing with iptables), so
 * every link is one distinct path; UDP on the links listed in `noUdp` is dropped (signaling-only
 * links).
 */
export function setup({ ns = 'cfclient', net = 251, links = 3, noUdp = [] } = {}) {
  teardown({ ns, links });
  run('ip', 'netns', 'add', ns);
  run('ip', '-n', ns, 'link', 'set', 'lo', 'up');
  const addrs = [];
  for (let i = 0; i < links; i += 1) {
    const c = `cfc${i}`;
    const s = `cfs${i}`;
    const client = `10.${net}.${i + 1}.2`;
    const server = `10.${net}.${i + 1}.1`;
    run('ip', 'link', 'add', s, 'type', 'veth', 'peer', 'name', c);
    // No IPv6 on the links: a link-local address finishing duplicate detection a second or two
    // after the link comes up is a network change to every Chromium on that side, which aborts
    // its in-flight requests (ERR_NETWORK_CHANGED) while a page loads.
    run('ip', 'link', 'set', c, 'netns', ns);
    run('ip', 'addr', 'add', `${server}/24`, 'dev', s);
    run('ip', 'link', 'set', s, 'up');
    run('ip', '-n', ns, 'addr', 'add', `${client}/24`, 'dev', c);
    run('ip', '-n', ns, 'link', 'set', c, 'up');
    run('ip', 'netns', 'exec', ns, 'iptables', '-A', 'OUTPUT', '-o', c, '!', '-s', client, '-j', 'DROP');
    if (noUdp.includes(i)) run('ip', 'netns', 'exec', ns, 'iptables', '-A', 'OUTPUT', '-o', c, '-p', 'udp', '-j', 'DROP');
    addrs.push({ client, server, clientIf: c, serverIf: s });
  }
  settle(ns, links);
  return { ns, links: addrs };
}

/**
 * Waits (at most 4 s) until the links' IPv6 link-local addresses have finished duplicate address
 * detection: each change is a network change to every Chromium on that side, which aborts its
 * in-flight requests (ERR_NETWORK_CHANGED) while a page loads.
 */
function settle(ns, links) {
  const deadline = Date.now() + 4_000;
  const tentative = () => {
    for (let i = 0; i < links; i += 1) {
      if ((tryRun('ip', '-6', 'addr', 'show', 'dev', `cfs${i}`) ?? '').includes('tentative')) return true;
      if ((tryRun('ip', '-n', ns, '-6', 'addr', 'show', 'dev', `cfc${i}`) ?? '').includes('tentative')) return true;
    }
    return false;
  };
  while (Date.now() < deadline && tentative()) execFileSync('sleep', ['0.1']);
  execFileSync('sleep', ['0.2']);
}

/** Removes the namespace, this machine's ends of its links and their UDP drop rules (idempotent). */
export function teardown({ ns = 'cfclient', links = 3 } = {}) {
  tryRun('ip', 'netns', 'del', ns);
  for (let i = 0; i < links; i += 1) {
    while (tryRun('iptables', '-D', 'INPUT', '-i', `cfs${i}`, '-p', 'udp', '-j', 'DROP') !== null) { /* all copies */ }
    tryRun('ip', 'link', 'del', `cfs${i}`);
  }
}

/**
 * Drops UDP on link `i` silently in both directions, as a corporate firewall does: the client's
 * packets die on this machine's end of the link (INPUT of `cfs<i>`: only this test's own
 * interface), the server's on the client's end. `sendto()` succeeds on both sides; nothing
 * answers. TCP passes.
 */
export function blockUdp(ns, i) {
  run('iptables', '-I', 'INPUT', '-i', `cfs${i}`, '-p', 'udp', '-j', 'DROP');
  run('ip', 'netns', 'exec', ns, 'iptables', '-I', 'INPUT', '-i', `cfc${i}`, '-p', 'udp', '-j', 'DROP');
}

/** Takes the client's end of link `i` down, as when a laptop's Wi-Fi drops. */
export function linkDown(ns, i) {
  run('ip', '-n', ns, 'link', 'set', `cfc${i}`, 'down');
}

/**
 * Drops every packet on the client's end of link `i`, both ways (`on`), or lets them through again:
 * the interface stays up but passes nothing, as a congested Wi-Fi or a captive portal does.
 */
export function block(ns, i, on) {
  for (const [chain, dir] of [['INPUT', '-i'], ['OUTPUT', '-o']]) {
    run('ip', 'netns', 'exec', ns, 'iptables', on ? '-I' : '-D', chain, dir, `cfc${i}`, '-j', 'DROP');
  }
}

/** An executable that runs Debian's Chromium inside `ns` (for Playwright's `executablePath`). */
export function chromiumIn(ns) {
  const dir = mkdtempSync(join(tmpdir(), 'cf-chromium-'));
  const path = join(dir, 'chromium');
  writeFileSync(path, `#!/bin/sh\nexec ip netns exec ${ns} ${process.env.CHROMIUM || '/usr/bin/chromium'} "$@"\n`);
  chmodSync(path, 0o755);
  return path;
}

/**
 * Moves the client's end of link `i` to another address in the same subnet (host part `host`),
 * as when a laptop gets a new DHCP lease or roams to another access point: the old address is
 * gone (sockets bound to it are dead, nothing is reset), the link stays up. Returns the new
 * address.
 */
export function readdress(ns, i, host, { net = 251 } = {}) {
  const c = `cfc${i}`;
  const prefix = `10.${net}.${i + 1}`;
  const lines = run('ip', '-n', ns, '-o', '-4', 'addr', 'show', 'dev', c);
  const old = /inet (\S+)\//.exec(lines)?.[1];
  const neu = `${prefix}.${host}`;
  if (old) {
    run('ip', 'netns', 'exec', ns, 'iptables', '-D', 'OUTPUT', '-o', c, '!', '-s', old, '-j', 'DROP');
    run('ip', '-n', ns, 'addr', 'del', `${old}/24`, 'dev', c);
  }
  run('ip', 'netns', 'exec', ns, 'iptables', '-A', 'OUTPUT', '-o', c, '!', '-s', neu, '-j', 'DROP');
  run('ip', '-n', ns, 'addr', 'add', `${neu}/24`, 'dev', c);
  return neu;
}

/**
 * Lets only TCP to and from port `port` on the server's end of link `i` pass, both ways (a
 * network that allows nothing but HTTPS to one host: no UDP, no other TCP port). Inside the
 * namespace, so it goes with the namespace.
 */
export function onlyTcpPort(ns, i, port) {
  const c = `cfc${i}`;
  const x = (...rule) => run('ip', 'netns', 'exec', ns, 'iptables', ...rule);
  x('-I', 'OUTPUT', '1', '-o', c, '-j', 'DROP');
  x('-I', 'OUTPUT', '1', '-o', c, '-p', 'tcp', '--dport', String(port), '-j', 'ACCEPT');
  x('-I', 'INPUT', '1', '-i', c, '-j', 'DROP');
  x('-I', 'INPUT', '1', '-i', c, '-p', 'tcp', '--sport', String(port), '-j', 'ACCEPT');
}

/**
 * Limits what this machine sends down link `i` (to the client) to `kbit` kbit/s with a token
 * bucket (queue bounded to 400 ms), as a slow DSL line or a congested uplink: TCP there backs up.
 * `kbit` 0 lifts the limit. The qdisc goes with the link.
 */
export function throttle(i, kbit) {
  tryRun('tc', 'qdisc', 'del', 'dev', `cfs${i}`, 'root');
  if (kbit > 0) run('tc', 'qdisc', 'add', 'dev', `cfs${i}`, 'root', 'tbf', 'rate', `${kbit}kbit`, 'burst', '16kb', 'latency', '400ms');
}

/** The iptables rule of `udpLoss` (inside the namespace). */
const lossRule = (i, percent) => ['INPUT', '-i', `cfc${i}`, '-p', 'udp', '-m', 'statistic', '--mode', 'random',
  '--probability', String(percent / 100), '-j', 'DROP'];

/**
 * Drops `percent` % of the UDP datagrams that reach the client's end of link `i`, at random (the
 * iptables `statistic` match; this kernel has no netem), as a lossy Wi-Fi does to everything the
 * server sends there: media, RTCP, STUN. TCP (the page, signaling) passes. Returns a function that
 * lifts it and returns how many datagrams it dropped.
 */
export function udpLoss(ns, i, percent) {
  const rule = lossRule(i, percent);
  run('ip', 'netns', 'exec', ns, 'iptables', '-I', ...rule);
  return () => {
    const listing = run('ip', 'netns', 'exec', ns, 'iptables', '-L', 'INPUT', '-v', '-x', '-n');
    const line = listing.split('\n').find((l) => l.includes('statistic mode random'));
    run('ip', 'netns', 'exec', ns, 'iptables', '-D', ...rule);
    return Number(line?.trim().split(/\s+/)[0] ?? NaN);
  };
}
