/*
 * age_clock: scGPT age classifier (mid 20-59 vs old 60-100) and in-silico gene perturbation,
 * under both published protocols (the repository's scripts and the IJMS 2025 article), one code
 * path. Every process is one call of bin/age_clock.py; docs/studies/age_clock.md has the details.
 *
 * Channel shapes: meta = [id: 'age_clock_<protocol>', protocol: 'repository'|'article'].
 */

process AGE_CLOCK_FIXTURE {
    tag "${meta.id}"
    label 'process_low'
    container 'ghcr.io/txrepro/txrepro-age_clock:0.1.0'

    input:
    val(meta)

    output:
    tuple val(meta), path('fixture/age_clock_fixture.h5ad'), path('fixture/scgpt_tiny'), path('fixture/ageing_genes.tsv'), emit: data
    tuple val("${task.process}"), val('txrepro'), eval('python -c "import txrepro; print(txrepro.__version__)"'), topic: versions, emit: versions

    script:
    """
    age_clock.py fixture --outdir fixture ${task.ext.args ?: ''}
    """

    stub:
    """
    mkdir -p fixture/scgpt_tiny
    touch fixture/age_clock_fixture.h5ad fixture/ageing_genes.tsv
    touch fixture/scgpt_tiny/args.json fixture/scgpt_tiny/best_model.pt fixture/scgpt_tiny/vocab.json
    """
}

process AGE_CLOCK_PREPARE {
    tag "${meta.id}"
    label 'process_medium'
    container 'ghcr.io/txrepro/txrepro-age_clock:0.1.0'

    input:
    tuple val(meta), path(h5ad), path(checkpoint), path(gene_table)

    output:
    tuple val(meta), path("${meta.id}.prepared.h5ad"), emit: prepared
    tuple val("${task.process}"), val('txrepro'), eval('python -c "import txrepro; print(txrepro.__version__)"'), topic: versions, emit: versions

    script:
    """
    age_clock.py prepare \\
        --input ${h5ad} \\
        --checkpoint ${checkpoint} \\
        --gene_table ${gene_table} \\
        --age_protocol ${meta.protocol} \\
        --out ${meta.id}.prepared.h5ad \\
        ${task.ext.args ?: ''}
    """

    stub:
    """
    touch ${meta.id}.prepared.h5ad
    """
}

process AGE_CLOCK_TRAIN {
    tag "${meta.id}"
    label 'process_high'
    label 'process_gpu'
    container 'ghcr.io/txrepro/txrepro-age_clock:0.1.0'

    input:
    tuple val(meta), path(prepared), path(checkpoint)

    output:
    tuple val(meta), path("${meta.id}.model"), emit: model
    tuple val("${task.process}"), val('txrepro'), eval('python -c "import txrepro; print(txrepro.__version__)"'), topic: versions, emit: versions
    tuple val("${task.process}"), val('torch'), eval('python -c "import torch; print(torch.__version__)"'), topic: versions, emit: versions_torch

    script:
    """
    age_clock.py train \\
        --prepared ${prepared} \\
        --checkpoint ${checkpoint} \\
        --out ${meta.id}.model \\
        ${task.ext.args ?: ''}
    """

    stub:
    """
    mkdir -p ${meta.id}.model
    touch ${meta.id}.model/args.json ${meta.id}.model/best_model.pt ${meta.id}.model/vocab.json ${meta.id}.model/training_log.tsv
    """
}

process AGE_CLOCK_BASELINE {
    tag "${meta.id}"
    label 'process_low'
    container 'ghcr.io/txrepro/txrepro-age_clock:0.1.0'

    input:
    tuple val(meta), path(prepared)

    output:
    tuple val(meta), path("${meta.id}.logreg_l1.pkl"), emit: model
    tuple val("${task.process}"), val('txrepro'), eval('python -c "import txrepro; print(txrepro.__version__)"'), topic: versions, emit: versions

    script:
    """
    age_clock.py baseline --prepared ${prepared} --out ${meta.id}.logreg_l1.pkl ${task.ext.args ?: ''}
    """

    stub:
    """
    touch ${meta.id}.logreg_l1.pkl
    """
}

process AGE_CLOCK_EVALUATE {
    tag "${meta.id}"
    label 'process_medium'
    label 'process_gpu'
    container 'ghcr.io/txrepro/txrepro-age_clock:0.1.0'

    input:
    tuple val(meta), path(prepared), path(model), path(logreg)

    output:
    tuple val(meta), path("${meta.id}_evaluate/metrics_evaluate.tsv"), emit: metrics
    tuple val(meta), path("${meta.id}_evaluate/predictions.tsv"), emit: predictions
    tuple val(meta), path("${meta.id}_evaluate/age_clock_*.png"), emit: figures
    tuple val("${task.process}"), val('txrepro'), eval('python -c "import txrepro; print(txrepro.__version__)"'), topic: versions, emit: versions

    script:
    """
    age_clock.py evaluate \\
        --prepared ${prepared} \\
        --model ${model} \\
        --logreg ${logreg} \\
        --outdir ${meta.id}_evaluate \\
        ${task.ext.args ?: ''}
    """

    stub:
    """
    mkdir -p ${meta.id}_evaluate
    touch ${meta.id}_evaluate/metrics_evaluate.tsv ${meta.id}_evaluate/predictions.tsv
    touch ${meta.id}_evaluate/age_clock_${meta.protocol}_roc.png ${meta.id}_evaluate/age_clock_${meta.protocol}_tissue_auc.png
    """
}

process AGE_CLOCK_PERTURB {
    tag "${meta.id}"
    label 'process_high'
    label 'process_gpu'
    container 'ghcr.io/txrepro/txrepro-age_clock:0.1.0'

    input:
    tuple val(meta), path(prepared), path(model)

    output:
    tuple val(meta), path("${meta.id}.perturbation.parquet"), emit: table
    tuple val("${task.process}"), val('txrepro'), eval('python -c "import txrepro; print(txrepro.__version__)"'), topic: versions, emit: versions

    script:
    """
    age_clock.py perturb \\
        --prepared ${prepared} \\
        --model ${model} \\
        --out ${meta.id}.perturbation.parquet \\
        ${task.ext.args ?: ''}
    """

    stub:
    """
    touch ${meta.id}.perturbation.parquet
    """
}

process AGE_CLOCK_STATISTICS {
    tag "${meta.id}"
    label 'process_low'
    container 'ghcr.io/txrepro/txrepro-age_clock:0.1.0'

    input:
    tuple val(meta), path(table), path(reference, stageAs: 'reference/*')

    output:
    tuple val(meta), path("${meta.id}_statistics/metrics_statistics.tsv"), emit: metrics
    tuple val(meta), path("${meta.id}_statistics/perturbation_genes.tsv"), emit: genes
    tuple val(meta), path("${meta.id}_statistics/perturbation_runs.tsv"), emit: runs
    tuple val(meta), path("${meta.id}_statistics/age_clock_*.png"), emit: figures
    tuple val("${task.process}"), val('txrepro'), eval('python -c "import txrepro; print(txrepro.__version__)"'), topic: versions, emit: versions

    script:
    """
    age_clock.py statistics \\
        --perturbation ${table} \\
        --outdir ${meta.id}_statistics \\
        --reference ${reference} \\
        ${task.ext.args ?: ''}
    """

    stub:
    """
    mkdir -p ${meta.id}_statistics
    touch ${meta.id}_statistics/metrics_statistics.tsv ${meta.id}_statistics/perturbation_genes.tsv ${meta.id}_statistics/perturbation_runs.tsv
    touch ${meta.id}_statistics/age_clock_${meta.protocol}_volcano.png ${meta.id}_statistics/age_clock_${meta.protocol}_stability.png
    """
}

process AGE_CLOCK_FINISH {
    tag "${meta.id}"
    label 'process_low'
    container 'ghcr.io/txrepro/txrepro-age_clock:0.1.0'

    input:
    tuple val(meta), path(metrics, stageAs: 'metrics/?/*'), val(protocols), val(data_source)

    output:
    path('age_clock/metrics.tsv'), emit: metrics
    path('age_clock/run_info.json'), emit: run_info
    path('age_clock/age_clock_metrics_mqc.tsv'), emit: mqc
    tuple val("${task.process}"), val('txrepro'), eval('python -c "import txrepro; print(txrepro.__version__)"'), topic: versions, emit: versions

    script:
    """
    age_clock.py finish \\
        --metrics metrics/*/* \\
        --protocols ${protocols} \\
        --data_source ${data_source} \\
        --outdir age_clock \\
        ${task.ext.args ?: ''}
    """

    stub:
    """
    mkdir -p age_clock
    touch age_clock/metrics.tsv age_clock/run_info.json age_clock/age_clock_metrics_mqc.tsv
    """
}

workflow AGE_CLOCK {
    take:
    ch_data      // channel: [ val(meta), path(h5ad), path(checkpoint folder), path(reference gene tables) ]
    protocols    // list: 'repository' and/or 'article'
    gene_tables  // [ AgeAnno DEG table (repository genes), 869-gene list (article genes) ]
    data_source  // 'provided' or 'fixture'

    main:
    ch_runs = ch_data
        .combine(channel.fromList(protocols))
        .map { meta, h5ad, checkpoint, reference, protocol ->
            def table = protocol == 'repository' ? gene_tables[0] : gene_tables[1]
            [meta + [id: "age_clock_${protocol}", protocol: protocol], h5ad, checkpoint, reference, table]
        }

    AGE_CLOCK_PREPARE(ch_runs.map { meta, h5ad, checkpoint, reference, table -> [meta, h5ad, checkpoint, table] })
    ch_prepared = AGE_CLOCK_PREPARE.out.prepared

    AGE_CLOCK_TRAIN(ch_prepared.join(ch_runs.map { meta, h5ad, checkpoint, reference, table -> [meta, checkpoint] }))
    AGE_CLOCK_BASELINE(ch_prepared)
    AGE_CLOCK_EVALUATE(ch_prepared.join(AGE_CLOCK_TRAIN.out.model).join(AGE_CLOCK_BASELINE.out.model))
    AGE_CLOCK_PERTURB(ch_prepared.join(AGE_CLOCK_TRAIN.out.model))
    AGE_CLOCK_STATISTICS(AGE_CLOCK_PERTURB.out.table.join(ch_runs.map { meta, h5ad, checkpoint, reference, table -> [meta, reference] }))

    ch_step_metrics = AGE_CLOCK_EVALUATE.out.metrics
        .mix(AGE_CLOCK_STATISTICS.out.metrics)
        .map { meta, tsv -> tsv }
        .collect()
        .map { files -> [[id: 'age_clock'], files, protocols.join(','), data_source] }
    AGE_CLOCK_FINISH(ch_step_metrics)

    ch_figures = AGE_CLOCK_EVALUATE.out.figures
        .mix(AGE_CLOCK_STATISTICS.out.figures)
        .map { meta, pngs -> pngs }
        .flatten()
        .collect()

    emit:
    metrics   = AGE_CLOCK_FINISH.out.metrics
    run_info  = AGE_CLOCK_FINISH.out.run_info
    figures   = ch_figures
    genes     = AGE_CLOCK_STATISTICS.out.genes
}
