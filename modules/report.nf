/*
 * The report: every study's metrics.tsv + assets/published_metrics.tsv -> reproduction summary
 * (TSV, Markdown), MultiQC HTML and figures.
 */

process REPORT {
    tag "${studies}"
    label 'process_low'
    container 'ghcr.io/txrepro/txrepro-report:0.1.0'

    input:
    path(metrics, stageAs: 'metrics/?/*')
    path(run_info, stageAs: 'run_info/?/*')
    path(figures, stageAs: 'figures/*')
    path(versions)
    path(params_tsv)
    path(published)
    path(multiqc_config)
    val(studies)

    output:
    path('report/reproduction_summary.tsv'), emit: summary_tsv
    path('report/reproduction_summary.md'), emit: summary_md
    path('report/multiqc_report.html'), emit: html
    path('report/figures'), emit: figures
    // Not sent to the `versions` topic: REPORT consumes that topic, and a process cannot wait on
    // itself. report.py adds its own versions to the report.
    tuple val("${task.process}"), val('txrepro'), eval('python -c "import txrepro; print(txrepro.__version__)"'), emit: versions

    script:
    """
    report.py build \\
        --metrics metrics/*/* \\
        --run-info ${run_info} \\
        --figures figures \\
        --versions ${versions} \\
        --params-file ${params_tsv} \\
        --published ${published} \\
        --multiqc-config ${multiqc_config} \\
        --studies ${studies} \\
        --outdir report \\
        ${task.ext.args ?: ''}
    """

    stub:
    """
    mkdir -p report/figures
    touch report/reproduction_summary.tsv report/reproduction_summary.md report/multiqc_report.html
    """
}

process STUDY_NOT_COMPUTED {
    tag "${study}"
    label 'process_low'
    container 'ghcr.io/txrepro/txrepro-report:0.1.0'

    input:
    val(study)

    output:
    path("${study}/metrics.tsv"), emit: metrics
    path("${study}/run_info.json"), emit: run_info
    tuple val("${task.process}"), val('txrepro'), eval('python -c "import txrepro; print(txrepro.__version__)"'), topic: versions, emit: versions

    script:
    """
    report.py not-computed --study ${study} --reason 'data not provided' --outdir ${study} ${task.ext.args ?: ''}
    """

    stub:
    """
    mkdir -p ${study}
    touch ${study}/metrics.tsv ${study}/run_info.json
    """
}
