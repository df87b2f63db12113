#!/usr/bin/env nextflow
/*
 * txrepro: re-runs published transcriptome-AI studies in pinned containers and ends in one report
 * that puts every reproduced number beside the published one, with a verdict.
 *
 *     nextflow run . -profile gpu,docker --study all --outdir results -params-file my_data.yml
 *
 * Params are read here only and passed into the study workflows (conf/modules/*.config closures
 * excepted, for ext.args). Each study is one module: modules/<study>.nf.
 */

include { validateParameters; paramsSummaryLog } from 'plugin/nf-schema'
include { REPORT; STUDY_NOT_COMPUTED } from './modules/report'
include { VCC; VCC_FIXTURE } from './modules/vcc'

// Under the strict syntax a command-line `--flag false` arrives as the string 'false', which
// Groovy treats as true. Every boolean param goes through this one function.
def asBoolean(String name, Object value) {
    if (value instanceof Boolean) {
        return value
    }
    def text = value == null ? '' : value.toString().trim().toLowerCase()
    if (text in ['true', 'yes', '1']) {
        return true
    }
    if (text in ['false', 'no', '0', '', 'null']) {
        return false
    }
    error("Parameter --${name} must be true or false, got '${value}'")
}

// 'all' or a comma list of study ids. Naming a study that is not implemented is an error;
// with 'all', unimplemented studies are skipped with a warning.
def selectStudies(String selection, List known, List implemented) {
    def wanted = selection == 'all' ? known : selection.tokenize(',').collect { s -> s.trim() }.findAll { s -> s }
    def unknown = wanted.findAll { s -> !(s in known) }
    if (unknown) {
        error("Unknown study '${unknown[0]}' in --study: expected 'all' or a comma list of ${known.join(', ')}")
    }
    def missing = wanted.findAll { s -> !(s in implemented) }
    if (missing && selection != 'all') {
        error("Study '${missing[0]}' is not implemented in this version of txrepro (implemented: ${implemented ? implemented.join(', ') : 'none'})")
    }
    if (missing) {
        log.warn("Not implemented in this version, skipped: ${missing.join(', ')}")
    }
    return wanted.findAll { s -> s in implemented }
}

workflow {
    main:
    if (asBoolean('validate_params', params.validate_params)) {
        validateParameters()
    }
    log.info(paramsSummaryLog(workflow))

    def known = ['age_clock', 'gpo_vae', 'vcc', 'sage_net', 'drugseq']
    def implemented = ['vcc']
    def studies = selectStudies(params.study.toString(), known, implemented)
    def use_fixtures = asBoolean('use_fixtures', params.use_fixtures)

    ch_metrics  = channel.empty()
    ch_run_info = channel.empty()
    ch_figures  = channel.empty()
    ch_missing  = channel.empty()

    // Study blocks (one per implemented study): run the study workflow on the given data, on
    // its fixture with --use_fixtures, or report it as not computed when no data is given.

    if ('vcc' in studies) {
        if (params.vcc_input || use_fixtures) {
            def ch_vcc = params.vcc_input
                ? channel.of([
                    [id: 'vcc'],
                    file(params.vcc_input, checkIfExists: true),
                    params.vcc_features ? file(params.vcc_features, checkIfExists: true) : [],
                    file(params.vcc_test_genes, checkIfExists: true),
                ])
                : VCC_FIXTURE(channel.of([id: 'vcc'])).data
            VCC(ch_vcc, params.vcc_models.toString().tokenize(',').collect { m -> m.trim() }, params.vcc_input ? 'provided' : 'fixture')
            ch_metrics  = ch_metrics.mix(VCC.out.metrics)
            ch_run_info = ch_run_info.mix(VCC.out.run_info)
            ch_figures  = ch_figures.mix(VCC.out.figures.flatten())
        } else {
            ch_missing = ch_missing.mix(channel.of('vcc'))
        }
    }

    // Studies without data: every published number becomes `not computed: data not provided`.
    STUDY_NOT_COMPUTED(ch_missing)
    ch_metrics  = ch_metrics.mix(STUDY_NOT_COMPUTED.out.metrics)
    ch_run_info = ch_run_info.mix(STUDY_NOT_COMPUTED.out.run_info)

    // One line per process and tool, for the report's software-versions section.
    ch_versions = channel.topic('versions')
        .unique()
        .map { process, tool, version -> "${process}\t${tool}\t${version}" }
        .collectFile(name: 'versions.tsv', newLine: true, sort: true)
        .ifEmpty([])

    ch_params = channel.of(params.collect { key, value -> "${key}\t${value}" }.sort().join('\n'))
        .collectFile(name: 'params.tsv', newLine: true)

    REPORT(
        ch_metrics.collect(),
        ch_run_info.collect().ifEmpty([]),
        ch_figures.collect().ifEmpty([]),
        ch_versions,
        ch_params,
        file(params.published_metrics, checkIfExists: true),
        file(params.multiqc_config, checkIfExists: true),
        studies.join(','),
    )
}
