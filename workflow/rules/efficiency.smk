# The dedicated efficiency measurement (params, FLOPs, latency, memory) of every method, on the
# configured device and input size. Snakemake's own benchmark: files are job cost, reported separately.


rule measure_efficiency:
    output:
        f"{R}/efficiency/{{method}}.json",
    params:
        eff=config["efficiency"],
        experiments=config["experiments"],
        num_classes=len(CLASSES[config["datasets"][DATASETS[0]]["source"]]),
    log:
        "logs/efficiency/{method}.log",
    benchmark:
        f"{R}/benchmarks/efficiency/{{method}}.tsv"
    conda:
        ENV
    threads: 2
    resources:
        mem_mb=8000,
        runtime=60,
        gpu=1,
    script:
        "../scripts/efficiency.py"
