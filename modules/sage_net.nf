/*
 * sage_net: SAGE-net personal-genome sequence-to-expression training (docs/studies/sage_net.md).
 * [preprocess-expression] -> prepare (main cohort, optional external cohort) -> PrediXcan ->
 * r-SAGE-net -> p-SAGE-net -> attribution -> evaluate. Every script is one call of
 * bin/sage_net.py; settings come from conf/modules/sage_net.config (ext.args).
 *
 * Cohort tuples: [meta, vcf, vcf_index, genes, expression, covariates, train, val, test, samples],
 * meta = [id, role: 'main'|'external', cohort, expression_is_adjusted]; absent files are [].
 * Reference: [fasta, fai] (fai may be []: pysam then indexes the staged copy).
 * Gene lists: [train, val, test] gene-id files, each [] for the chromosome split.
 */

process SAGE_NET_FIXTURE {
    tag "${meta.id}"
    label 'process_low'
    container 'ghcr.io/txrepro/txrepro-sage_net:0.1.0'

    input:
    val(meta)

    output:
    tuple val(meta), path('fixture/cohort.vcf.gz'), path('fixture/cohort.vcf.gz.tbi'), path('fixture/genes.tsv'), path('fixture/expression_tpm.csv'), path('fixture/covariates.csv'), path('fixture/train_samples.txt'), path('fixture/val_samples.txt'), path('fixture/test_samples.txt'), emit: main
    tuple val(meta), path('fixture/external.vcf.gz'), path('fixture/external.vcf.gz.tbi'), path('fixture/genes.tsv'), path('fixture/external_expression.csv'), path('fixture/external_samples.txt'), emit: external
    tuple path('fixture/genome.fa'), path('fixture/genome.fa.fai'), emit: reference
    tuple val("${task.process}"), val('txrepro'), eval('python -c "import txrepro; print(txrepro.__version__)"'), topic: versions, emit: versions

    script:
    """
    sage_net.py fixture --outdir fixture ${task.ext.args ?: ''}
    """

    stub:
    """
    mkdir -p fixture
    touch fixture/cohort.vcf.gz fixture/cohort.vcf.gz.tbi fixture/genes.tsv fixture/expression_tpm.csv fixture/covariates.csv
    touch fixture/train_samples.txt fixture/val_samples.txt fixture/test_samples.txt
    touch fixture/external.vcf.gz fixture/external.vcf.gz.tbi fixture/external_expression.csv fixture/external_samples.txt
    touch fixture/genome.fa fixture/genome.fa.fai
    """
}

process SAGE_NET_PREPROCESS {
    tag "${meta.id}"
    label 'process_medium'
    container 'ghcr.io/txrepro/txrepro-sage_net:0.1.0'

    input:
    tuple val(meta), path(tpm), path(covariates)

    output:
    tuple val(meta), path("${meta.id}_expression_adjusted.csv"), emit: expression
    path("${meta.id}_expression_adjusted.json"), emit: report
    tuple val("${task.process}"), val('statsmodels'), eval('python -c "import statsmodels; print(statsmodels.__version__)"'), topic: versions, emit: versions_statsmodels
    tuple val("${task.process}"), val('txrepro'), eval('python -c "import txrepro; print(txrepro.__version__)"'), topic: versions, emit: versions

    script:
    """
    sage_net.py preprocess-expression --tpm ${tpm} --covariates '${covariates ?: ''}' --out ${meta.id}_expression_adjusted.csv ${task.ext.args ?: ''}
    """

    stub:
    """
    touch ${meta.id}_expression_adjusted.csv ${meta.id}_expression_adjusted.json
    """
}

process SAGE_NET_PREPARE {
    tag "${meta.id}"
    label 'process_medium'
    container 'ghcr.io/txrepro/txrepro-sage_net:0.1.0'

    input:
    tuple val(meta), path(vcf), path(vcf_index), path(genes), path(expression), path(train_samples), path(val_samples), path(test_samples), path(samples)
    tuple path(fasta), path(fai)
    tuple path(train_genes), path(val_genes), path(test_genes)

    output:
    tuple val(meta), path("prepared_${meta.role}"), emit: prepared
    tuple val("${task.process}"), val('cyvcf2'), eval('python -c "import cyvcf2; print(cyvcf2.__version__)"'), topic: versions, emit: versions_cyvcf2
    tuple val("${task.process}"), val('pysam'), eval('python -c "import pysam; print(pysam.__version__)"'), topic: versions, emit: versions_pysam
    tuple val("${task.process}"), val('txrepro'), eval('python -c "import txrepro; print(txrepro.__version__)"'), topic: versions, emit: versions

    script:
    // --index-vcf: a VCF staged without its index (or plain gzip) is indexed in the task folder
    """
    sage_net.py prepare --vcf ${vcf} --fasta ${fasta} --genes ${genes} --expression ${expression} \\
        --role ${meta.role} --cohort '${meta.cohort}' \\
        --train-samples '${train_samples ?: ''}' --val-samples '${val_samples ?: ''}' --test-samples '${test_samples ?: ''}' --samples '${samples ?: ''}' \\
        --train-genes '${train_genes ?: ''}' --val-genes '${val_genes ?: ''}' --test-genes '${test_genes ?: ''}' \\
        --index-vcf --out prepared_${meta.role} ${task.ext.args ?: ''}
    """

    stub:
    """
    mkdir -p prepared_${meta.role}/variants
    touch prepared_${meta.role}/manifest.json prepared_${meta.role}/genes.tsv prepared_${meta.role}/samples.tsv prepared_${meta.role}/expression.npz
    """
}

process SAGE_NET_PREDIXCAN {
    tag "${meta.id}"
    label 'process_medium'
    container 'ghcr.io/txrepro/txrepro-sage_net:0.1.0'

    input:
    tuple val(meta), path(prepared)

    output:
    tuple val(meta), path('predixcan'), emit: predixcan
    tuple val("${task.process}"), val('scikit-learn'), eval('python -c "import sklearn; print(sklearn.__version__)"'), topic: versions, emit: versions_sklearn
    tuple val("${task.process}"), val('txrepro'), eval('python -c "import txrepro; print(txrepro.__version__)"'), topic: versions, emit: versions

    script:
    """
    sage_net.py predixcan --prepared ${prepared} --out predixcan ${task.ext.args ?: ''}
    """

    stub:
    """
    mkdir -p predixcan
    touch predixcan/pearson.tsv predixcan/weights.tsv predixcan/predictions.npz predixcan/settings.json
    """
}

process SAGE_NET_TRAIN_RSAGENET {
    tag "${meta.id}"
    label 'process_high'
    label 'process_gpu'
    container 'ghcr.io/txrepro/txrepro-sage_net:0.1.0'

    input:
    tuple val(meta), path(prepared)
    tuple path(fasta), path(fai)

    output:
    tuple val(meta), path('rsagenet'), emit: model
    tuple val("${task.process}"), val('torch'), eval('python -c "import torch; print(torch.__version__)"'), topic: versions, emit: versions_torch
    tuple val("${task.process}"), val('txrepro'), eval('python -c "import txrepro; print(txrepro.__version__)"'), topic: versions, emit: versions

    script:
    """
    sage_net.py train-rsagenet --prepared ${prepared} --fasta ${fasta} --out rsagenet --threads ${task.cpus} ${task.ext.args ?: ''}
    """

    stub:
    """
    mkdir -p rsagenet
    touch rsagenet/model.pt rsagenet/history.tsv rsagenet/meta.json
    """
}

process SAGE_NET_TRAIN_PSAGENET {
    tag "${meta.id}"
    label 'process_high'
    label 'process_gpu'
    container 'ghcr.io/txrepro/txrepro-sage_net:0.1.0'

    input:
    tuple val(meta), path(prepared), path(predixcan), path(rsagenet)
    tuple path(fasta), path(fai)

    output:
    tuple val(meta), path('psagenet'), emit: model
    tuple val("${task.process}"), val('torch'), eval('python -c "import torch; print(torch.__version__)"'), topic: versions, emit: versions_torch
    tuple val("${task.process}"), val('txrepro'), eval('python -c "import txrepro; print(txrepro.__version__)"'), topic: versions, emit: versions

    script:
    """
    sage_net.py train-psagenet --prepared ${prepared} --fasta ${fasta} --predixcan ${predixcan} --init ${rsagenet} --out psagenet --threads ${task.cpus} ${task.ext.args ?: ''}
    """

    stub:
    """
    mkdir -p psagenet
    touch psagenet/model.pt psagenet/history.tsv psagenet/meta.json
    """
}

process SAGE_NET_ATTRIBUTE {
    tag "${meta.id}"
    label 'process_medium'
    label 'process_gpu'
    container 'ghcr.io/txrepro/txrepro-sage_net:0.1.0'

    input:
    tuple val(meta), path(prepared), path(predixcan), path(psagenet)
    tuple path(fasta), path(fai)

    output:
    tuple val(meta), path('attribution'), emit: attribution
    tuple val("${task.process}"), val('txrepro'), eval('python -c "import txrepro; print(txrepro.__version__)"'), topic: versions, emit: versions

    script:
    """
    sage_net.py attribute --prepared ${prepared} --fasta ${fasta} --predixcan ${predixcan} --psagenet ${psagenet} --out attribution --threads ${task.cpus} ${task.ext.args ?: ''}
    """

    stub:
    """
    mkdir -p attribution
    touch attribution/attribution.tsv attribution/summary.json attribution/sage_net_attribution.png
    """
}

process SAGE_NET_EVALUATE {
    tag "${meta.id}"
    label 'process_medium'
    label 'process_gpu'
    container 'ghcr.io/txrepro/txrepro-sage_net:0.1.0'

    input:
    tuple val(meta), path(prepared), path(predixcan), path(rsagenet), path(psagenet), path(attribution)
    path(external_prepared)
    tuple path(fasta), path(fai)
    val(data_source)

    output:
    path('sage_net/metrics.tsv'), emit: metrics
    path('sage_net/run_info.json'), emit: run_info
    path('sage_net/sage_net_*.png'), emit: figures
    path('sage_net/sage_net_metrics_mqc.tsv'), emit: mqc
    path('sage_net/per_gene_pearson.tsv'), emit: per_gene
    tuple val("${task.process}"), val('txrepro'), eval('python -c "import txrepro; print(txrepro.__version__)"'), topic: versions, emit: versions

    script:
    """
    sage_net.py evaluate --prepared ${prepared} --fasta ${fasta} --predixcan ${predixcan} --rsagenet ${rsagenet} --psagenet ${psagenet} \\
        --external-prepared '${external_prepared ?: ''}' --attribution ${attribution} --cohort '${meta.cohort}' \\
        --data-source ${data_source} --outdir sage_net --threads ${task.cpus} ${task.ext.args ?: ''}
    """

    stub:
    """
    mkdir -p sage_net
    touch sage_net/metrics.tsv sage_net/run_info.json sage_net/sage_net_gene_pearson.png sage_net/sage_net_metrics_mqc.tsv sage_net/per_gene_pearson.tsv
    """
}

workflow SAGE_NET {
    take:
    ch_cohorts    // main cohort, and the external one when given (module header)
    ch_reference  // [fasta, fai]
    ch_gene_lists // [train, val, test] gene-id files ([] each for the chromosome split)
    data_source   // 'fixture' or 'provided'

    main:
    reference = ch_reference.first()
    // log2(TPM+1) and covariate adjustment only where the expression is not adjusted yet
    cohorts = ch_cohorts.branch { row ->
        tpm: !row[0].expression_is_adjusted
        adjusted: true
    }
    SAGE_NET_PREPROCESS(cohorts.tpm.map { row -> [row[0], row[4], row[5]] })
    adjusted = cohorts.tpm
        .map { row -> [row[0], row] }
        .join(SAGE_NET_PREPROCESS.out.expression)
        .map { meta, row, expression -> [meta, row[1], row[2], row[3], expression, row[6], row[7], row[8], row[9]] }
    ready = cohorts.adjusted
        .map { row -> [row[0], row[1], row[2], row[3], row[4], row[6], row[7], row[8], row[9]] }
        .mix(adjusted)

    SAGE_NET_PREPARE(ready, reference, ch_gene_lists.first())
    prepared = SAGE_NET_PREPARE.out.prepared.branch { meta, dir ->
        main: meta.role == 'main'
        external: meta.role == 'external'
    }

    SAGE_NET_PREDIXCAN(prepared.main)
    SAGE_NET_TRAIN_RSAGENET(prepared.main, reference)
    SAGE_NET_TRAIN_PSAGENET(prepared.main.join(SAGE_NET_PREDIXCAN.out.predixcan).join(SAGE_NET_TRAIN_RSAGENET.out.model), reference)
    SAGE_NET_ATTRIBUTE(prepared.main.join(SAGE_NET_PREDIXCAN.out.predixcan).join(SAGE_NET_TRAIN_PSAGENET.out.model), reference)

    external = prepared.external.map { meta, dir -> dir }.collect().ifEmpty([])
    SAGE_NET_EVALUATE(
        prepared.main
            .join(SAGE_NET_PREDIXCAN.out.predixcan)
            .join(SAGE_NET_TRAIN_RSAGENET.out.model)
            .join(SAGE_NET_TRAIN_PSAGENET.out.model)
            .join(SAGE_NET_ATTRIBUTE.out.attribution),
        external,
        reference,
        data_source,
    )

    emit:
    metrics  = SAGE_NET_EVALUATE.out.metrics
    run_info = SAGE_NET_EVALUATE.out.run_info
    figures  = SAGE_NET_EVALUATE.out.figures
}
