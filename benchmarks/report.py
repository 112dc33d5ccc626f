"""Print a Markdown table of kernel throughput from a pytest-benchmark JSON file.

    python benchmarks/report.py bench_results/kernels-<date>.json

Throughput is loan-path-steps (loans x paths x steps) per second of the fastest round.
"""
import json
import sys


def main(path):
    with open(path) as handle:
        data = json.load(handle)
    rows = []
    for bench in data["benchmarks"]:
        info = bench["extra_info"]
        if "loan_path_steps" not in info:
            continue
        rate = info["loan_path_steps"] / bench["stats"]["min"] / 1e6
        book = info["book"] + (f" ({info['kernel']})" if "kernel" in info else "")
        rows.append((book, info["backend"], info["n_threads"], info["n_loans"], rate))
    machine = data["machine_info"]
    print(f"Machine: {machine.get('cpu', {}).get('brand_raw', '?')}, "
          f"{machine.get('usable_cores', '?')} usable cores; {data['datetime']}")
    print()
    print("| book | backend | threads | loans x paths x steps | M loan-path-steps/s | vs numpy |")
    print("|---|---|---|---|---|---|")
    for book in sorted({r[0] for r in rows}):
        numpy_rate = next((r[4] for r in rows if r[0] == book and r[1] == "numpy"), None)
        for _, backend, threads, loans, rate in sorted(r for r in rows if r[0] == book):
            ratio = f"{rate / numpy_rate:.0f}x" if numpy_rate else "-"
            print(f"| {book} | {backend} | {threads} | {loans:,} x 64 x 30 | {rate:,.0f} | {ratio} |")


if __name__ == "__main__":
    main(sys.argv[1])
