// LangDAO end to end in the browser, on a real anvil: wallet sign-in from the page, a student who
// starts the paid session on chain from the page, the tutor's End paying the tutor exactly what
// `SessionEnded.totalPaid` says, a room that both leave settling at once, sign-in failures shown with
// their code while the guest keeps working, and a backend's `#token=` link.
//
// The wallet is real: each browser context gets an injected EIP-1193 provider (`window.ethereum`)
// that forwards to a viem wallet client in this process (`privateKeyToAccount` with anvil's default
// keys, HTTP transport to anvil): `personal_sign` is `account.signMessage`, `eth_sendTransaction`
// is `walletClient.sendTransaction` (signed here, sent to anvil), reads go to anvil as they are.
// Only "the user presses Reject" is simulated: EIP-1193 error 4001 instead of a signature.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, execFileSync } from 'node:child_process';
import { readFileSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createPublicClient, createWalletClient, http, encodeFunctionData, getAddress } from 'viem';
import { privateKeyToAccount } from 'viem/accounts';
import { foundry } from 'viem/chains';
import { launch, capCamera, eventually, startServer, freePort, diagnose, randomRoom } from './helpers.mjs';

const ROOT = new URL('../..', import.meta.url).pathname;
/** anvil's default accounts 0..3 (public test keys, worthless anywhere else). */
const KEYS = [
  '0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80',
  '0x59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d',
  '0x5de4111afa1a4b94908f83103eb1f1706367c2e68ca870fc3fb9a804cdab365a',
  '0x7c852118294e51e653712a81e05800f419141751be58f605c371e15141b007a6',
];
const [OWNER, STUDENT, TUTOR, STRANGER] = KEYS.map((k) => privateKeyToAccount(k));
/** Token units per second, as tests/paid_sessions.rs. */
const RATE = 1000n;
const SPANISH = 1;
const JWT_SECRET = 'browser-test-jwt-secret-0123456789';

const artifact = (name) => JSON.parse(readFileSync(join(ROOT, `contracts/out/${name}.json`), 'utf8'));
const DAO_ABI = artifact('LangDAO').abi;
const TOKEN_ABI = artifact('TestToken').abi;

/** Everything the tests share: anvil, the contracts, the server, one Chromium. */
const fx = { anvil: null, rpc: '', chain: null, dao: '', token: '', server: null, log: [], base: '', port: 0, dataDir: '', browser: null, pages: [] };

// ------------------------------------------------------------------ chain

/** Starts anvil (scripts/ensure-anvil.sh installs it) on a port it picks; resolves its URL. */
function startAnvil() {
  const bin = execFileSync(join(ROOT, 'scripts/ensure-anvil.sh'), { encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'] }).trim();
  const child = spawn(bin, ['--host', '127.0.0.1', '--port', '0'], { stdio: ['ignore', 'pipe', 'ignore'] });
  fx.anvil = child;
  return new Promise((resolve, reject) => {
    let out = '';
    const timer = setTimeout(() => reject(new Error('anvil did not start')), 30_000);
    child.stdout.on('data', (b) => {
      out += b;
      const m = /Listening on (\S+)/.exec(out);
      if (m && !fx.rpc) { clearTimeout(timer); fx.rpc = `http://${m[1]}`; resolve(fx.rpc); }
    });
    child.once('exit', (code) => reject(new Error(`anvil exited with ${code}`)));
  });
}

const walletOf = (account) => createWalletClient({ account, chain: foundry, transport: http(fx.rpc) });

async function deploy(account, name, abi, args) {
  const hash = await walletOf(account).deployContract({ abi, bytecode: artifact(name).bytecode, args });
  const receipt = await fx.chain.waitForTransactionReceipt({ hash });
  assert.equal(receipt.status, 'success', `deploy ${name}`);
  return receipt.contractAddress;
}

async function send(account, address, abi, functionName, args) {
  const hash = await walletOf(account).writeContract({ address, abi, functionName, args });
  const receipt = await fx.chain.waitForTransactionReceipt({ hash });
  assert.equal(receipt.status, 'success', functionName);
}

const tokenBalance = (who) => fx.chain.readContract({ address: fx.token, abi: TOKEN_ABI, functionName: 'balanceOf', args: [who] });

/** The `SessionEnded` log of chain session `id` (a decimal string), or undefined. */
async function sessionEnded(id) {
  const logs = await fx.chain.getContractEvents({ address: fx.dao, abi: DAO_ABI, eventName: 'SessionEnded', fromBlock: 0n });
  return logs.find((l) => l.args.sessionId === BigInt(id));
}

// ------------------------------------------------------------------ the injected wallet

/** A JSON-RPC request straight to anvil; its error keeps code and data, as a wallet passes them on. */
async function rpc(method, params) {
  const res = await fetch(fx.rpc, {
    method: 'POST', headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ jsonrpc: '2.0', id: 1, method, params }),
  });
  const body = await res.json();
  if (body.error) throw Object.assign(new Error(body.error.message), { code: body.error.code, data: body.error.data });
  return body.result;
}

/**
 * A browser context whose pages have `window.ethereum`, backed by a viem wallet for `account`.
 * `wallet.rejectNextSign = true` makes the next `personal_sign` a user's rejection (4001).
 * `wallet.chainId = n` makes the wallet say it is on chain n until a `wallet_switchEthereumChain`
 * (refused, 4902, while `wallet.refuseSwitch`); `null`: anvil's chain.
 */
async function walletContext(account) {
  const context = await fx.browser.newContext({ viewport: { width: 1280, height: 720 } });
  await capCamera(context, 640);
  const client = walletOf(account);
  const wallet = { account, context, rejectNextSign: false, chainId: null, refuseSwitch: false, calls: [] };
  await context.exposeFunction('__confabTestWallet', async (method, params) => {
    wallet.calls.push(method);
    try {
      switch (method) {
        case 'eth_requestAccounts':
        case 'eth_accounts':
          return { result: [account.address] };
        case 'eth_chainId':
          return { result: wallet.chainId === null ? await rpc(method, params) : `0x${wallet.chainId.toString(16)}` };
        case 'wallet_switchEthereumChain': {
          if (wallet.refuseSwitch) return { error: { code: 4902, message: 'Unrecognized chain ID.' } };
          const want = Number(BigInt(params[0].chainId));
          wallet.chainId = want === Number(BigInt(await rpc('eth_chainId', []))) ? null : want;
          return { result: null };
        }
        case 'personal_sign': {
          if (wallet.rejectNextSign) {
            wallet.rejectNextSign = false;
            return { error: { code: 4001, message: 'User rejected the request.' } };
          }
          const [data, from] = params;
          assert.equal(getAddress(from), account.address, 'personal_sign for our account');
          return { result: await account.signMessage({ message: { raw: data } }) };
        }
        case 'eth_sendTransaction': {
          const [tx] = params;
          assert.equal(getAddress(tx.from), account.address, 'eth_sendTransaction from our account');
          const hash = await client.sendTransaction({
            to: tx.to, data: tx.data,
            value: tx.value ? BigInt(tx.value) : undefined,
            gas: tx.gas ? BigInt(tx.gas) : undefined,
          });
          return { result: hash };
        }
        default:
          return { result: await rpc(method, params) };
      }
    } catch (e) {
      return { error: { code: e.code ?? -32603, message: e.shortMessage || e.message, data: e.data } };
    }
  });
  await context.addInitScript(() => {
    const call = /** @type {any} */ (window).__confabTestWallet;
    /** @type {any} */ (window).ethereum = {
      async request({ method, params }) {
        const r = await call(method, params ?? []);
        if (r.error) throw Object.assign(new Error(r.error.message), { code: r.error.code, data: r.error.data });
        return r.result;
      },
      on() {},
      removeListener() {},
    };
  });
  return wallet;
}

/** A new page of `context` (console kept for diagnostics) at `path` of the server. */
async function open(context, label, path, base = fx.base) {
  const page = await context.newPage();
  page.logs = [];
  page.on('console', (m) => page.logs.push(`[${label}] ${m.type()}: ${m.text()}`));
  page.on('pageerror', (e) => page.logs.push(`[${label}] pageerror: ${e.message}`));
  fx.pages.push(page);
  await page.goto(`${base}${path}`);
  return page;
}

/** Resolves once the page is in its room as `userId` (a predicate or an exact sub). */
async function connectedAs(page, who, ms = 30_000) {
  return eventually(async () => {
    const s = await page.evaluate(() => (window.confab ? { state: window.confab.state, userId: window.confab.userId } : null));
    return s && s.state === 'connected' && (typeof who === 'function' ? who(s.userId) : s.userId === who) ? s : null;
  }, ms, `the page to be connected as ${typeof who === 'function' ? 'expected' : who}`);
}

const isAddress = (s) => /^0x[0-9a-fA-F]{40}$/.test(s || '');

/** Signs in on the name overlay (the page was opened without `?name=`) and joins. */
async function signInOnOverlay(page, name, account) {
  await page.locator('#name-wallet-btn').waitFor({ state: 'visible', timeout: 10_000 });
  await page.fill('#name-input', name);
  await page.click('#name-wallet-btn');
  await connectedAs(page, account.address);
}

/** The student's dialog starts the session on chain; resolves the paid session the page shows. */
async function startFromPage(student) {
  await student.locator('#paid-start').waitFor({ state: 'visible', timeout: 15_000 });
  await student.click('#paid-start');
  assert.equal(await student.inputValue('#paid-tutor'), TUTOR.address, 'the room link prefilled the tutor');
  await student.click('#paid-submit');
  await student.locator('#paid-badge').waitFor({ state: 'visible', timeout: 60_000 }).catch(async (e) => {
    throw new Error(`${e.message}; dialog status: ${await student.textContent('#paid-status')}`);
  });
  return student.evaluate(() => window.confab.paidSession);
}

// ------------------------------------------------------------------ fixture

before(async () => {
  await startAnvil();
  fx.chain = createPublicClient({ chain: foundry, transport: http(fx.rpc) });
  fx.token = await deploy(OWNER, 'TestToken', TOKEN_ABI, ['Test Token', 'TST']);
  fx.dao = await deploy(OWNER, 'LangDAO', DAO_ABI, [fx.token, OWNER.address]);
  await send(TUTOR, fx.dao, DAO_ABI, 'registerTutor', [SPANISH, RATE]);
  // The student holds tokens but has deposited nothing: the page approves and deposits.
  await send(OWNER, fx.token, TOKEN_ABI, 'mint', [STUDENT.address, 20_000_000n]);

  // The server settles with anvil's account 0, the contract's owner (as tests/paid_sessions.rs).
  process.env.CONFAB_WALLET_KEY = KEYS[0];
  process.env.CONFAB_JWT_SECRET = JWT_SECRET;
  fx.port = await freePort();
  fx.base = `http://127.0.0.1:${fx.port}`;
  fx.dataDir = mkdtempSync(join(tmpdir(), 'confab-langdao-'));
  fx.server = await startServer(fx.port, fx.dataDir, fx.log, {
    args: ['--public-ip', '127.0.0.1', '--chain-rpc-url', fx.rpc, '--contract-address', fx.dao,
      // Sign-in messages must name this origin: a page on http://localhost:<port> is another domain.
      '--public-origin', fx.base],
  });
  fx.browser = await launch();
});

after(async () => {
  await fx.browser?.close().catch(() => {});
  fx.server?.kill('SIGKILL');
  fx.anvil?.kill('SIGKILL');
  if (fx.dataDir) rmSync(fx.dataDir, { recursive: true, force: true });
});

/** Runs `body`; on failure prints the pages' consoles and the server's output tail first. */
async function diagnosed(body) {
  try {
    await body();
  } catch (e) {
    await diagnose(fx.pages);
    console.log(`--- server output tail\n${fx.log.join('').split('\n').slice(-60).join('\n')}`);
    throw e;
  } finally {
    for (const p of fx.pages.splice(0)) await p.context().close().catch(() => {});
  }
}

const roomQuery = () => `contract=${fx.dao}&tutor=${TUTOR.address}&language=${SPANISH}`;

// ------------------------------------------------------------------ tests

test('a refused wallet sign-in shows its code and the guest stays in the call; a #token= link signs in and leaves the address bar',
  { timeout: 120_000 }, () => diagnosed(async () => {
    const room = randomRoom('wallet');
    const wallet = await walletContext(STRANGER);
    const page = await open(wallet.context, 'guest', `/rooms/${room}?name=Guest`);
    const guest = await connectedAs(page, (sub) => !!sub && !isAddress(sub));

    // The page's ABI encoder agrees with viem's.
    const encoded = await page.evaluate(async ([tutor, lang]) => {
      const m = await import('/langdao.js');
      return [m.encodeCall('startSession(address,uint8)', [tutor, lang]), m.encodeCall('deposit(uint256)', [123456789n])];
    }, [TUTOR.address, SPANISH]);
    assert.deepEqual(encoded, [
      encodeFunctionData({ abi: DAO_ABI, functionName: 'startSession', args: [TUTOR.address, SPANISH] }),
      encodeFunctionData({ abi: DAO_ABI, functionName: 'deposit', args: [123456789n] }),
    ]);

    // The user presses Reject in the wallet: the code is shown, the guest is still in the call.
    await page.locator('#wallet-btn').waitFor({ state: 'visible', timeout: 10_000 });
    wallet.rejectNextSign = true;
    await page.click('#wallet-btn');
    await page.locator('#wallet-btn[data-error="rejected"]').waitFor({ timeout: 15_000 });
    await page.locator('.toast', { hasText: '(rejected)' }).waitFor({ timeout: 5_000 });
    assert.ok(wallet.calls.includes('personal_sign'), 'the wallet was asked to sign');
    const still = await connectedAs(page, guest.userId, 5_000);
    assert.equal(still.userId, guest.userId, 'still the same guest');
    assert.equal(await page.textContent('#wallet-label'), 'Sign in with wallet');

    // A page on another origin than --public-origin: the server refuses the domain, the page says so.
    const port = new URL(fx.base).port;
    const other = await open(wallet.context, 'localhost', `/rooms/${room}?name=Other`, `http://localhost:${port}`);
    await connectedAs(other, (sub) => !!sub && !isAddress(sub));
    await other.click('#wallet-btn');
    await other.locator('#wallet-btn[data-error="wrong_domain"]').waitFor({ timeout: 15_000 });
    await other.locator('.toast', { hasText: '(wrong_domain)' }).waitFor({ timeout: 5_000 });

    // The LangDAO backend mints a token for its user's address with the shared secret and sends
    // them in with it in the fragment: no name to type, joined as that address, fragment gone.
    const token = execFileSync(process.env.CONFAB_BIN, ['token', '--user', STRANGER.address, '--name', 'Linked Ada',
      '--ttl', '600', '--data-dir', fx.dataDir], { encoding: 'utf8', env: { ...process.env, CONFAB_JWT_SECRET: JWT_SECRET } }).trim();
    const plain = await fx.browser.newContext();
    const linked = await open(plain, 'linked', `/rooms/${room}#token=${token}`);
    await connectedAs(linked, STRANGER.address);
    assert.equal(await linked.evaluate(() => location.hash), '', 'the token left the address bar');
    assert.ok(!linked.url().includes(token), 'the token is not in the URL');
    assert.equal(await linked.evaluate(() => window.confab.name), 'Linked Ada', "the token's name, no overlay");
    assert.equal(await linked.evaluate(() => document.getElementById('wallet-btn').dataset.address), STRANGER.address);
    assert.ok(!linked.logs.some((l) => l.includes(token)), 'the token never reached the console');
    // A reload in the same tab keeps the identity (sessionStorage), still without the token in the URL.
    await linked.reload();
    await connectedAs(linked, STRANGER.address);
  }));

test('the student starts the paid session on chain from the page, the tutor presses End and is paid SessionEnded.totalPaid',
  { timeout: 180_000 }, () => diagnosed(async () => {
    const room = randomRoom('paid');
    const s = await walletContext(STUDENT);
    const t = await walletContext(TUTOR);
    // The student signs in on the name overlay; the tutor joins as a guest and signs in from the top bar.
    const student = await open(s.context, 'student', `/rooms/${room}?${roomQuery()}`);
    await signInOnOverlay(student, 'Student', STUDENT);
    const tutor = await open(t.context, 'tutor', `/rooms/${room}?name=Tutor`);
    await connectedAs(tutor, (sub) => !!sub && !isAddress(sub));
    await tutor.click('#wallet-btn');
    await connectedAs(tutor, TUTOR.address); // rejoined (a reload) as the wallet's address
    assert.equal(await tutor.textContent('#wallet-label'), `${TUTOR.address.slice(0, 6)}…${TUTOR.address.slice(-4)}`);

    // The student's wallet is on mainnet: the page asks it to switch to the contract's chain
    // (the server's `chain_id`), then approve + deposit + startSession, each signed by the
    // student's wallet, then `session_started`.
    s.chainId = 1;
    const paid = await startFromPage(student);
    assert.ok(s.calls.includes('wallet_switchEthereumChain'), 'the wallet was asked to switch chains');
    assert.equal(s.chainId, null, 'and is on the contract chain');
    assert.equal(paid.student, STUDENT.address);
    assert.equal(paid.tutor, TUTOR.address);
    assert.equal(paid.rate_per_second, String(RATE));
    const sendsAfterSignIn = s.calls.filter((m) => m === 'eth_sendTransaction').length;
    assert.equal(sendsAfterSignIn, 3, 'approve, deposit, startSession');

    // Both see the badge with elapsed time and cost, and an End button.
    await tutor.locator('#paid-badge').waitFor({ state: 'visible', timeout: 15_000 });
    for (const p of [student, tutor]) {
      assert.ok(await p.isVisible('#paid-end'), 'End button shown to a party');
      await eventually(async () => /^0:0[2-9]$/.test(await p.textContent('#paid-elapsed')), 15_000, 'two seconds on the badge');
      assert.match(await p.textContent('#paid-cost'), /\d+ units/);
    }

    const before = await tokenBalance(TUTOR.address);
    await tutor.click('#paid-end');
    const ended = await eventually(() => sessionEnded(paid.chain_session_id), 30_000, 'SessionEnded on chain');
    const { totalPaid, duration } = ended.args;
    assert.ok(totalPaid > 0n && duration > 0n, `paid for ${duration} s: ${totalPaid}`);
    assert.equal(await tokenBalance(TUTOR.address) - before, totalPaid, "the tutor's balance grew by SessionEnded.totalPaid");
    // Both pages: the badge is gone and the settlement card says settled.
    for (const p of [student, tutor]) {
      await p.locator('#paid-badge').waitFor({ state: 'hidden', timeout: 10_000 });
      await p.locator('#settlement[data-state="settled"]').waitFor({ timeout: 20_000 });
    }
  }));

test('a second paid session that both parties leave is settled on chain within seconds, not after the grace',
  { timeout: 180_000 }, () => diagnosed(async () => {
    const room = randomRoom('paid-leave');
    const s = await walletContext(STUDENT);
    const t = await walletContext(TUTOR);
    const student = await open(s.context, 'student', `/rooms/${room}?${roomQuery()}`);
    await signInOnOverlay(student, 'Student', STUDENT);
    const tutor = await open(t.context, 'tutor', `/rooms/${room}`);
    await signInOnOverlay(tutor, 'Tutor', TUTOR);

    // A wallet on another chain that will not switch: nothing is sent, the code says why.
    s.chainId = 1;
    s.refuseSwitch = true;
    await student.locator('#paid-start').waitFor({ state: 'visible', timeout: 15_000 });
    await student.click('#paid-start');
    const sendsBefore = s.calls.filter((m) => m === 'eth_sendTransaction').length;
    await student.click('#paid-submit');
    await student.locator('#paid-status[data-code="wrong_chain"]').waitFor({ timeout: 15_000 });
    assert.equal(s.calls.filter((m) => m === 'eth_sendTransaction').length, sendsBefore, 'no transaction on the wrong chain');
    await student.keyboard.press('Escape');
    s.refuseSwitch = false;

    // The escrow left over from the first session went back to the student's balance: the page
    // tops it up (approve + deposit) to the prepaid time again and starts.
    const paid = await startFromPage(student);
    await tutor.locator('#paid-badge').waitFor({ state: 'visible', timeout: 15_000 });

    // Both press Leave: every party left on purpose, so the session ends at once (the paid grace is 30 s).
    await student.click('#leave-btn');
    await tutor.click('#leave-btn');
    const left = Date.now();
    const ended = await eventually(() => sessionEnded(paid.chain_session_id), 40_000, 'SessionEnded on chain');
    const took = Date.now() - left;
    console.log(`both left: SessionEnded confirmed after ${took} ms (total paid ${ended.args.totalPaid})`);
    assert.ok(took < 10_000, `settled ${took} ms after both left: not at once (the 30 s grace?)`);
    await student.locator('#settlement[data-state="settled"]').waitFor({ timeout: 20_000 });
    // Ended because the room closed on purpose, not by the grace of a disconnect.
    const status = await student.evaluate(async () => (await window.confab.fetchPaidSession()).body);
    assert.equal(status.session.end_reason, 'participant_ended', JSON.stringify(status));
  }));
