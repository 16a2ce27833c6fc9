"""Compare two fingerprint.json files (benchmarks/fingerprint/run.sh): features, training set, scores."""
import json, sys
a=json.load(open(sys.argv[1])); b=json.load(open(sys.argv[2]))
print("features equal:", a['features']==b['features']); print("trainset equal:", a['trainset']==b['trainset'])
sa={k.split('/')[0]:v for k,v in a['scores'].items()}; sb={k.split('/')[0]:v for k,v in b['scores'].items()}
ok=True
for r in sorted(sa):
    x,y=sa[r],sb.get(r)
    same = y is not None and all(x[k]==y[k] for k in ('hash_scores','score_sum','phi_sum','rows','n_phi'))
    ok &= same
    print(r, x['rows'], "identical" if same else f"DIFFERENT {x} {y}")
print("ALL SCORES IDENTICAL" if ok and set(sa)==set(sb) else "SCORES DIFFER")
