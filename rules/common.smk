# Helpers: a stage-table output (leakk.workflow.table.Out) as a Snakemake output.


def output_file(out):
    """The path, marked directory/temp, and report(...) with its caption where the table gives one."""
    path = out.path
    if out.report:
        caption, category, subcategory = out.report
        path = report(path, caption=f"../{caption}", category=category, subcategory=subcategory)
    if out.kind == "directory":
        return directory(path)
    if out.kind == "temp":
        return temp(path)
    return path
