# The dedicated efficiency measurement (params, FLOPs, latency, memory) of every method, on the
# configured device and input size. Snakemake's own benchmark: files are job cost, reported separately.
# One job measures the methods one after another (no two latency measurements competing for the same device),
# each in a fresh process so that its peak memory is its own. The LR scale is the main degradation's.


rule measure_efficiency:
    output:
        expand(f"{R}/efficiency/{{method}}.json", method=METHODS),
    params:
        eff=config["efficiency"],
        scale=DEG[MAIN_DEG]["scale"],
        experiments=config["experiments"],
        num_classes=len(dataset_classes(config["datasets"][DATASETS[0]], resolve=repo_path)),
    log:
        "logs/efficiency/efficiency.log",
    benchmark:
        f"{R}/benchmarks/efficiency/efficiency.tsv"
    conda:
        ENV
    threads: 1
    resources:
        mem_mb=8000,
        runtime=60,
        gpu=1,
    script:
        "../scripts/efficiency.py"
