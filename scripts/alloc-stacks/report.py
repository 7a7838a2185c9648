#!/usr/bin/env python3
# scripts/alloc-stacks/report.py BIN MAPS START_OFFSET MESSAGES: malloc calls per message by first Peregrine frame (addr2line + swift-demangle), with the top call chains.
import struct, sys, collections, subprocess, bisect
binf, mapsf, start = sys.argv[1], sys.argv[2], int(sys.argv[3])
nmsg = int(sys.argv[4])
maps = []
for l in open(mapsf):
    p = l.split()
    if len(p) < 6: continue
    a, b = [int(x, 16) for x in p[0].split('-')]
    maps.append((a, b, int(p[2], 16), p[5]))
maps.sort()
data = open(binf, 'rb').read()[start:]
N = 15
cnt = collections.Counter()
recs = len(data) // (8 * N)
for i in range(recs):
    v = struct.unpack_from('<15Q', data, i * 8 * N)
    cnt[v[1:1 + min(v[0], 14)]] += 1
def loc(a):
    for (s, e, off, path) in maps:
        if s <= a < e: return path, a - s + off
    return '?', a
# symbolize all unique frames
uniq = set(f for k in cnt for f in k)
bypath = collections.defaultdict(list)
for f in uniq:
    p, o = loc(f); bypath[p].append((f, o))
sym = {}
for p, lst in bypath.items():
    if p == '?' or not p.startswith('/'):
        for f, o in lst: sym[f] = '?'
        continue
    # file offset -> vaddr: for PIE, vaddr ~= offset for text usually (same segment alignment); use -j? rely on addr2line with offset
    inp = '\n'.join(hex(o - 1) for f, o in lst)
    out = subprocess.run(['addr2line', '-f', '-C', '-e', p], input=inp, capture_output=True, text=True).stdout.split('\n')
    for i, (f, o) in enumerate(lst):
        name = out[2 * i] if 2 * i < len(out) else '?'
        sym[f] = p.split('/')[-1] + ':' + name
names = list(sym.values())
dem = subprocess.run(['swift-demangle', '--simplified', '--compact'], input='\n'.join(names), capture_output=True, text=True).stdout.split('\n')
dm = dict(zip(sym.keys(), dem))
print('records', recs, 'per msg', recs / nmsg)
# aggregate by first frame not in libc/swiftCore allocation internals
agg = collections.Counter()
ex = collections.defaultdict(collections.Counter)
skip = ('libstacks', 'libswiftCore', 'libc.so', 'libFoundation', 'libdispatch', 'libstdc')
for k, c in cnt.items():
    frames = [dm[f] for f in k]
    ours = [s for s in frames if not s.split(':')[0].startswith(skip)]
    key = ours[0][:160] if ours else frames[0][:160]
    agg[key] += c
    ex[key][' <- '.join(x[:70] for x in ours[:9])] += c
for key, c in agg.most_common(45):
    print(f'{c / nmsg:7.2f}  {key}')
    for e, c2 in ex[key].most_common(6):
        print(f'          {c2 / nmsg:6.2f} {e[:700]}')
