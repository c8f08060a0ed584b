# Tables (CSV, Markdown, LaTeX), figures and one HTML page, by a pure function of the result files.


rule build_report:
    input:
        runs=report_inputs(),
        experiments=config["experiments"],
    output:
        directory(f"{R}/report"),
    params:
        reference=config["report"]["reference"],
        methods=METHODS,
        seeds=SEEDS,
    log:
        "logs/report/report.log",
    benchmark:
        f"{R}/benchmarks/report/report.tsv"
    conda:
        ENV
    threads: 1
    resources:
        mem_mb=2000,
        runtime=30,
    script:
        "../scripts/report.py"
