#!/usr/bin/env node
// Compiles contracts/*.sol offline with the pinned npm `solc` (solcjs) and writes one artifact per contract to
// contracts/out/<Name>.json: { contractName, compiler, abi, bytecode, deployedBytecode }.
// The artifacts are committed: Rust `sol!` bindings are generated from them at build time.
//
//   node build.js           rebuild the artifacts
//   node build.js --check   compile in memory and exit 1 if a committed artifact is missing or stale
'use strict';

const fs = require('fs');
const path = require('path');
const solc = require('solc');

const CONTRACTS = ['LangDAO', 'TestToken'];
const HERE = __dirname;
const OUT = path.join(HERE, 'out');

// Pinned settings: changing any of them changes the bytecode, which the staleness check will report.
const SETTINGS = {
  optimizer: { enabled: true, runs: 200 },
  // cancun: supported by every chain the public LangDAO deployment targets and by anvil.
  evmVersion: 'cancun',
  outputSelection: { '*': { '*': ['abi', 'evm.bytecode.object', 'evm.deployedBytecode.object'] } },
};

function compile() {
  const sources = {};
  for (const name of CONTRACTS) {
    sources[`${name}.sol`] = { content: fs.readFileSync(path.join(HERE, `${name}.sol`), 'utf8') };
  }
  const output = JSON.parse(solc.compile(JSON.stringify({ language: 'Solidity', sources, settings: SETTINGS })));
  const problems = (output.errors || []).filter((e) => e.severity === 'error');
  for (const e of output.errors || []) process.stderr.write(e.formattedMessage + '\n');
  if (problems.length > 0) {
    throw new Error(`solc reported ${problems.length} error(s)`);
  }
  const artifacts = {};
  for (const name of CONTRACTS) {
    const c = output.contracts[`${name}.sol`][name];
    artifacts[name] = {
      contractName: name,
      compiler: `solc ${solc.version()}`,
      abi: c.abi,
      bytecode: '0x' + c.evm.bytecode.object,
      deployedBytecode: '0x' + c.evm.deployedBytecode.object,
    };
  }
  return artifacts;
}

function render(artifact) {
  return JSON.stringify(artifact, null, 2) + '\n';
}

function main() {
  const check = process.argv.includes('--check');
  const artifacts = compile();
  let stale = [];
  for (const [name, artifact] of Object.entries(artifacts)) {
    const file = path.join(OUT, `${name}.json`);
    const fresh = render(artifact);
    if (check) {
      const committed = fs.existsSync(file) ? fs.readFileSync(file, 'utf8') : null;
      if (committed !== fresh) stale.push(path.relative(path.join(HERE, '..'), file));
    } else {
      fs.mkdirSync(OUT, { recursive: true });
      fs.writeFileSync(file, fresh);
      console.log(`wrote ${path.relative(process.cwd(), file)} (${(artifact.bytecode.length - 2) / 2} bytes of init code)`);
    }
  }
  if (stale.length > 0) {
    console.error(`stale contract artifacts: ${stale.join(', ')}; run scripts/build-contracts.sh and commit them`);
    process.exit(1);
  }
  if (check) console.log('contract artifacts are up to date');
}

main();
