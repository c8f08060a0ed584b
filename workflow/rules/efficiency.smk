# The dedicated efficiency measurement (params, FLOPs, latency, memory) of every method, on the
# configured device and input size. Snakemake's own benchmark: files are job cost, reported separately.
# One job measures every method in one process (one import and warm-up of the libraries, and no two
# latency measurements competing for the same device).


rule measure_efficiency:
    output:
        expand(f"{R}/efficiency/{{method}}.json", method=METHODS),
    params:
        eff=config["efficiency"],
        experiments=config["experiments"],
        num_classes=len(CLASSES[config["datasets"][DATASETS[0]]["source"]]),
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
