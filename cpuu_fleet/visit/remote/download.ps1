# cpuu-fleet: download
<#
.SYNOPSIS
    Streams files back to the engine: a header per file, then base64 chunks, one output object each.
.DESCRIPTION
    Either -Paths (those files, in that order) or -Directory with -Filter (the folder's matching
    files sorted by name, the way list-files finds them: collect lists and downloads in ONE
    pipeline). With -Directory, files whose name matches an -ExcludeName wildcard are left out
    entirely, and a file whose SHA-256 is in -KnownSha256 gets its header with Skipped = $true and
    no content (the engine already has it). -NewerThan (ISO-8601 UTC, when CPUU started by this
    host's clock) leaves out files last written before it: an earlier run's results.
    For each file: @{Path; Name; Length; Sha256; LastWriteTimeUtc; Skipped; Locked}, then the
    content as base64 strings of at most -ChunkSize raw bytes (none for an empty file). A file
    another process holds open exclusively gets its header with Locked = $true, no Sha256 and no
    content, and the other files still go: one locked log never fails the whole download. Only one chunk is in
    memory at a time, so large files cost no more memory than small ones. Every -Paths entry is
    checked before anything is sent. Terminating errors: FileNotFound (ObjectNotFound),
    MissingPath (InvalidArgument: neither -Paths nor -Directory). Read-only.
#>
[CmdletBinding()]
param(
    [string[]]$Paths,

    [string]$Directory,

    [string]$Filter = '*',

    [string[]]$ExcludeName,

    [string[]]$KnownSha256,

    [ValidateRange(1, 16777216)]
    [int]$ChunkSize = 262144,

    [string]$NewerThan
)

Set-StrictMode -Version 2.0
$ErrorActionPreference = 'Stop'

function Test-Locked {
    # ERROR_SHARING_VIOLATION (32) and ERROR_LOCK_VIOLATION (33): another process holds the file
    # without sharing read access (a CPUU log opened exclusively, an AV scan). .NET method errors
    # arrive wrapped in a MethodInvocationException, hence the walk down InnerException.
    param([System.Exception]$Exception)
    while ($null -ne $Exception) {
        if ($Exception -is [System.IO.IOException]) {
            $code = $Exception.HResult -band 0xFFFF
            if ($code -eq 32 -or $code -eq 33) {
                return $true
            }
        }
        $Exception = $Exception.InnerException
    }
    return $false
}

function Open-Shared {
    # ReadWrite and Delete sharing: a CPUU log may still be open for writing. $null when another
    # process holds the file exclusively: the file is reported as locked, the others still go.
    param([Parameter(Mandatory = $true)][string]$Path)
    try {
        return [System.IO.File]::Open($Path, [System.IO.FileMode]::Open,
            [System.IO.FileAccess]::Read, ([System.IO.FileShare]::ReadWrite -bor [System.IO.FileShare]::Delete))
    }
    catch {
        if (Test-Locked -Exception $_.Exception) {
            return $null
        }
        throw
    }
}

function New-Failure {
    param([System.Exception]$Exception, [string]$ErrorId, [System.Management.Automation.ErrorCategory]$Category, $Target)
    return New-Object -TypeName System.Management.Automation.ErrorRecord -ErrorAction Stop -ArgumentList @(
        $Exception, $ErrorId, $Category, $Target)
}

$skipped = @{}
if ([string]::IsNullOrEmpty($Directory)) {
    if ($null -eq $Paths -or $Paths.Count -eq 0) {
        $exception = New-Object -TypeName System.ArgumentException -ErrorAction Stop -ArgumentList 'Give -Paths or -Directory.'
        $PSCmdlet.ThrowTerminatingError((New-Failure $exception 'MissingPath' InvalidArgument $null))
    }
}
else {
    # Directory mode: the folder's matching files, as list-files finds them, minus exclusions.
    $Paths = @()
    if (Test-Path -LiteralPath $Directory -PathType Container) {
        $known = @{}
        foreach ($hash in @($KnownSha256)) {
            if ($null -ne $hash) {
                $known[$hash.ToLowerInvariant()] = $true
            }
        }
        $files = Get-ChildItem -LiteralPath $Directory -Filter $Filter -File -Force -ErrorAction Stop | Sort-Object -Property Name
        $since = $null
        if (-not [string]::IsNullOrEmpty($NewerThan)) {
            $since = [DateTime]::Parse($NewerThan, [System.Globalization.CultureInfo]::InvariantCulture,
                [System.Globalization.DateTimeStyles]::RoundtripKind).ToUniversalTime()
        }
        foreach ($file in $files) {
            $excluded = ($null -ne $since -and $file.LastWriteTimeUtc -lt $since)
            foreach ($pattern in @($ExcludeName)) {
                if ($null -ne $pattern -and $file.Name -like $pattern) {
                    $excluded = $true
                }
            }
            if (-not $excluded) {
                $Paths += $file.FullName
            }
        }
        $skipped = $known
    }
}

foreach ($path in $Paths) {
    if (-not (Test-Path -LiteralPath $path -PathType Leaf)) {
        $exception = New-Object -TypeName System.IO.FileNotFoundException -ErrorAction Stop -ArgumentList @(
            "Cannot find path '$path' because it does not exist.", $path)
        $record = New-Object -TypeName System.Management.Automation.ErrorRecord -ErrorAction Stop -ArgumentList @(
            $exception, 'FileNotFound', [System.Management.Automation.ErrorCategory]::ObjectNotFound, $path)
        $PSCmdlet.ThrowTerminatingError($record)
    }
}

$buffer = New-Object -TypeName byte[] -ErrorAction Stop -ArgumentList $ChunkSize
foreach ($path in $Paths) {
    $stream = Open-Shared -Path $path
    if ($null -eq $stream) {
        $item = Get-Item -LiteralPath $path -Force -ErrorAction Stop
        @{
            Path             = $path
            Name             = $item.Name
            Length           = [int64]$item.Length
            Sha256           = $null
            LastWriteTimeUtc = $item.LastWriteTimeUtc.ToString('o')
            Skipped          = $false
            Locked           = $true
        }
        continue
    }
    try {
        # First pass: hash exactly the bytes that will be sent (the file may still grow).
        $length = $stream.Length
        $sha256 = [System.Security.Cryptography.SHA256]::Create()
        try {
            $remaining = $length
            while ($remaining -gt 0) {
                $read = $stream.Read($buffer, 0, [int][Math]::Min([int64]$buffer.Length, $remaining))
                if ($read -le 0) {
                    break
                }
                $null = $sha256.TransformBlock($buffer, 0, $read, $null, 0)
                $remaining -= $read
            }
            $null = $sha256.TransformFinalBlock($buffer, 0, 0)
            $hex = ([System.BitConverter]::ToString($sha256.Hash) -replace '-', '').ToLowerInvariant()
        }
        finally {
            $sha256.Dispose()
        }

        $item = Get-Item -LiteralPath $path -Force -ErrorAction Stop
        $isKnown = $skipped.ContainsKey($hex)
        @{
            Path             = $path
            Name             = $item.Name
            Length           = [int64]$length
            Sha256           = $hex
            LastWriteTimeUtc = $item.LastWriteTimeUtc.ToString('o')
            Skipped          = $isKnown
            Locked           = $false
        }
        if ($isKnown) {
            continue
        }

        # Second pass: one base64 string per chunk.
        $null = $stream.Seek(0, [System.IO.SeekOrigin]::Begin)
        $remaining = $length
        while ($remaining -gt 0) {
            $read = $stream.Read($buffer, 0, [int][Math]::Min([int64]$buffer.Length, $remaining))
            if ($read -le 0) {
                break
            }
            [System.Convert]::ToBase64String($buffer, 0, $read)
            $remaining -= $read
        }
    }
    finally {
        $stream.Dispose()
    }
}
