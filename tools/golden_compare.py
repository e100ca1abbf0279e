# Compares `rwkv7 forward` (seq and rnn modes) with every golden file in ../shared/golden:
# max |Δlogit| against the SPEC §7 tolerance and the final WKV state's relative error.
# Usage (from the repository root, after building): python3 tools/golden_compare.py
import json, struct, sys, subprocess, math, os, tempfile
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED = os.path.join(ROOT, '..', 'shared')
BIN = os.path.join(ROOT, 'build', 'rwkv7')
TMP = tempfile.mkdtemp()
def load(p):
    b = open(p,'rb').read(); n = struct.unpack('<Q', b[:8])[0]; h = json.loads(b[8:8+n]); out = {}
    for k, v in h.items():
        if k == '__metadata__': out[k] = v; continue
        s, e = v['data_offsets']; raw = b[8+n+s:8+n+e]
        fmt = {'F32':'f','I32':'i'}[v['dtype']]
        out[k] = (v['shape'], struct.unpack('<%d%s' % (len(raw)//4, fmt), raw))
    return out
cases = [('rand-L2-D128','golden'),('rand-L3-D256-bf16','golden'),('rand-L2-D96-hs32-fp16','golden'),('tiny-rwkv7-834K','models')]
for name, d in cases:
    g = load(f'{SHARED}/golden/{name}.golden.safetensors')
    toks = ','.join(str(t) for t in g['tokens'][1])
    for mode in ['seq','rnn']:
        subprocess.run([BIN,'forward','-m',f'{SHARED}/{d}/{name}.pth','--tokens',toks,'--mode',mode,'-o',f'{TMP}/{name}-{mode}.st','-t','1'], check=True)
        o = load(f'{TMP}/{name}-{mode}.st')
        L = g['logits'][1]; m = sum(L)/len(L); std = math.sqrt(sum((x-m)**2 for x in L)/len(L))
        dl = max(abs(a-b) for a,b in zip(o['logits'][1], L))
        ws = g['state.wkv'][1]; dw = max(abs(a-b) for a,b in zip(o['state.wkv'][1], ws)) / max(abs(x) for x in ws)
        print(f"{name:24s} {mode}: max|dlogit| {dl:.2e} (tol {1e-4*max(1,std):.2e}), wkv rel {dw:.2e}")
