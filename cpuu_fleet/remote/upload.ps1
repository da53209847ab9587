# cpuu-fleet: upload
<#
.SYNOPSIS
    Writes files sent as pipeline input into a staging folder, checking each one's SHA-256.
.DESCRIPTION
    Input, for each file: a header hashtable @{Path; Length; Sha256} (Path relative to
    -Directory), then the file's content as base64 strings, any number of them (none for an empty
    file). Content is streamed to "<target>.partial", checked (length and SHA-256), then moved over
    the target, so a half-written or corrupted file never takes the place of a good one.
    Terminating errors: HashMismatch (InvalidData), DiskFull (WriteError), InvalidPath
    (InvalidArgument) for a relative path that leaves -Directory, InvalidHeader (InvalidData) for
    a Length that is not a whole number or a Sha256 that is not 64 hex digits, FileInUse
    (ResourceBusy) when the target stays held by another process. On any error the current
    file's .partial is removed.
#>
[CmdletBinding()]
param(
    [Parameter(Mandatory = $true)]
    [string]$Directory,

    [Parameter(ValueFromPipeline = $true)]
    [object]$InputObject
)

begin {
    Set-StrictMode -Version 2.0
    $ErrorActionPreference = 'Stop'

    # The upload's state, shared by the functions below and the process/end blocks. Not $script:
    # variables: a script added with UseLocalScope runs in a new scope that is NOT a script scope
    # (PowerShell's CommandProcessor: NewScope(fromScriptFile), false for AddScript text), so
    # $script: would name the runspace's global scope. The functions read $state through
    # PowerShell's dynamic scoping and change its entries, never the variable itself.
    $state = @{
        Root            = $null
        Current         = $null
        ReplaceAttempts = 5
        ReplaceDelayMs  = 500
    }

    function Stop-Upload {
        param(
            [Parameter(Mandatory = $true)][string]$Message,
            [Parameter(Mandatory = $true)][string]$ErrorId,
            [Parameter(Mandatory = $true)][System.Management.Automation.ErrorCategory]$Category,
            [object]$Target
        )
        $exception = New-Object -TypeName System.InvalidOperationException -ErrorAction Stop -ArgumentList $Message
        $record = New-Object -TypeName System.Management.Automation.ErrorRecord -ErrorAction Stop -ArgumentList @(
            $exception, $ErrorId, $Category, $Target)
        $PSCmdlet.ThrowTerminatingError($record)
    }

    function Test-DiskFull {
        # ERROR_DISK_FULL (0x70) and ERROR_HANDLE_DISK_FULL (0x27) arrive as IOException HResults.
        param([System.Exception]$Exception)
        while ($null -ne $Exception) {
            if ($Exception -is [System.IO.IOException]) {
                $code = $Exception.HResult -band 0xFFFF
                if ($code -eq 0x70 -or $code -eq 0x27) {
                    return $true
                }
            }
            $Exception = $Exception.InnerException
        }
        return $false
    }

    function Test-InUse {
        # The target is held by another process: ERROR_SHARING_VIOLATION (32), ERROR_LOCK_VIOLATION
        # (33), ReplaceFile's ERROR_UNABLE_TO_REMOVE_REPLACED (1175) and ERROR_UNABLE_TO_MOVE_REPLACEMENT
        # (1176, 1177), or access denied (UnauthorizedAccessException), which is what replacing a
        # running program's image gives. Assumption (Microsoft does not list ReplaceFile's errors per
        # cause): access denied is taken for "in use" too; retrying it costs a few seconds at most.
        param([System.Exception]$Exception)
        while ($null -ne $Exception) {
            if ($Exception -is [System.UnauthorizedAccessException]) {
                return $true
            }
            if ($Exception -is [System.IO.IOException]) {
                $code = $Exception.HResult -band 0xFFFF
                if ($code -eq 32 -or $code -eq 33 -or ($code -ge 1175 -and $code -le 1177)) {
                    return $true
                }
            }
            $Exception = $Exception.InnerException
        }
        return $false
    }

    function Move-IntoPlace {
        # Replace keeps the target's identity (ACLs) and swaps in one step; Move for a new file.
        # A target another process holds (an AV scan, CPUU running from this folder) is retried a
        # few times, then reported as FileInUse: the .partial is removed by the caller.
        param([Parameter(Mandatory = $true)][System.Collections.IDictionary]$File)
        $attempt = 1
        while ($true) {
            try {
                if ([System.IO.File]::Exists($File.Target)) {
                    [System.IO.File]::Replace($File.Partial, $File.Target, [NullString]::Value)
                }
                else {
                    [System.IO.File]::Move($File.Partial, $File.Target)
                }
                return
            }
            catch {
                if (-not (Test-InUse -Exception $_.Exception)) {
                    throw
                }
                if ($attempt -ge $state.ReplaceAttempts) {
                    Stop-Upload -Message ("'{0}' is in use by another process: it could not be replaced after {1} attempts." -f `
                            $File.Relative, $attempt) -ErrorId 'FileInUse' -Category ResourceBusy -Target $File.Relative
                }
            }
            $attempt += 1
            Start-Sleep -Milliseconds $state.ReplaceDelayMs -ErrorAction Stop
        }
    }

    function Remove-Partial {
        if ($null -ne $state.Current) {
            $state.Current.Stream.Dispose()
            $state.Current.Hasher.Dispose()
            if (Test-Path -LiteralPath $state.Current.Partial -PathType Leaf) {
                Remove-Item -LiteralPath $state.Current.Partial -Force -ErrorAction Stop
            }
            $state.Current = $null
        }
    }

    function Open-Target {
        param([Parameter(Mandatory = $true)][System.Collections.IDictionary]$Header)
        $relative = [string]$Header['Path']
        $target = $null
        try {
            if ([string]::IsNullOrWhiteSpace($relative) -or [System.IO.Path]::IsPathRooted($relative)) {
                throw 'not a relative path'
            }
            $target = [System.IO.Path]::GetFullPath([System.IO.Path]::Combine($state.Root, $relative))
        }
        catch {
            $target = $null
        }
        if ($null -eq $target -or -not $target.StartsWith($state.Root, [System.StringComparison]::OrdinalIgnoreCase)) {
            Stop-Upload -Message "Invalid path '$relative': it must stay inside $Directory." `
                -ErrorId 'InvalidPath' -Category InvalidArgument -Target $relative
        }
        # The engine sends Length as a string (pypsrp 0.9.1 would tag a Python int as a 32-bit
        # <I32>, which Windows cannot deserialize for 2 GiB or more). A cast would read a missing
        # Length as 0 and fail on text with an id nobody knows: parse it, and say InvalidHeader.
        $length = [int64]0
        $lengthText = [string]$Header['Length']
        if (-not [int64]::TryParse($lengthText, [System.Globalization.NumberStyles]::None,
                [System.Globalization.CultureInfo]::InvariantCulture, [ref]$length)) {
            Stop-Upload -Message "Invalid header for '$relative': Length is missing or not a number." `
                -ErrorId 'InvalidHeader' -Category InvalidData -Target $relative
        }
        $expected = [string]$Header['Sha256']
        if ($expected -notmatch '^[0-9A-Fa-f]{64}$') {
            Stop-Upload -Message "Invalid header for '$relative': Sha256 is missing or not 64 hex digits." `
                -ErrorId 'InvalidHeader' -Category InvalidData -Target $relative
        }
        $drive = New-Object -TypeName System.IO.DriveInfo -ErrorAction Stop -ArgumentList ([System.IO.Path]::GetPathRoot($target))
        if ($length -gt $drive.AvailableFreeSpace) {
            Stop-Upload -Message 'There is not enough space on the disk.' -ErrorId 'DiskFull' `
                -Category WriteError -Target $relative
        }
        $null = [System.IO.Directory]::CreateDirectory([System.IO.Path]::GetDirectoryName($target))
        $partial = $target + '.partial'
        $stream = [System.IO.File]::Open($partial, [System.IO.FileMode]::Create,
            [System.IO.FileAccess]::Write, [System.IO.FileShare]::None)
        $state.Current = @{
            Relative = $relative
            Target   = $target
            Partial  = $partial
            Length   = $length
            Sha256   = $expected.ToLowerInvariant()
            Stream   = $stream
            Hasher   = [System.Security.Cryptography.SHA256]::Create()
            Written  = [int64]0
        }
    }

    function Write-Chunk {
        param([Parameter(Mandatory = $true)][AllowEmptyString()][string]$Text)
        if ($null -eq $state.Current) {
            Stop-Upload -Message 'File content arrived before its header.' -ErrorId 'UnexpectedInput' `
                -Category InvalidData -Target $null
        }
        $bytes = [System.Convert]::FromBase64String($Text)
        try {
            $state.Current.Stream.Write($bytes, 0, $bytes.Length)
        }
        catch {
            $relative = $state.Current.Relative
            if (Test-DiskFull -Exception $_.Exception) {
                Remove-Partial
                Stop-Upload -Message 'There is not enough space on the disk.' -ErrorId 'DiskFull' `
                    -Category WriteError -Target $relative
            }
            Remove-Partial
            throw
        }
        $null = $state.Current.Hasher.TransformBlock($bytes, 0, $bytes.Length, $null, 0)
        $state.Current.Written += $bytes.Length
    }

    function Complete-Target {
        $file = $state.Current
        try {
            $file.Stream.Flush()
        }
        catch {
            if (Test-DiskFull -Exception $_.Exception) {
                Remove-Partial
                Stop-Upload -Message 'There is not enough space on the disk.' -ErrorId 'DiskFull' `
                    -Category WriteError -Target $file.Relative
            }
            throw
        }
        $file.Stream.Dispose()
        $null = $file.Hasher.TransformFinalBlock((New-Object -TypeName byte[] -ErrorAction Stop -ArgumentList 0), 0, 0)
        $actual = ([System.BitConverter]::ToString($file.Hasher.Hash) -replace '-', '').ToLowerInvariant()
        $file.Hasher.Dispose()
        if ($file.Written -ne $file.Length -or $actual -ne $file.Sha256) {
            Remove-Item -LiteralPath $file.Partial -Force -ErrorAction Stop
            $state.Current = $null
            Stop-Upload -Message ("Hash mismatch for '{0}': received {1} bytes with SHA-256 {2}, expected {3} bytes with {4}." -f `
                    $file.Relative, $file.Written, $actual, $file.Length, $file.Sha256) `
                -ErrorId 'HashMismatch' -Category InvalidData -Target $file.Relative
        }
        Move-IntoPlace -File $file
        $state.Current = $null
        @{
            Path   = $file.Relative
            Length = $file.Written
            Sha256 = $actual
        }
    }

    $null = [System.IO.Directory]::CreateDirectory($Directory)
    $state.Root = [System.IO.Path]::GetFullPath($Directory).TrimEnd('\') + '\'
}

process {
    if ($null -eq $InputObject) {
        return
    }
    try {
        if ($InputObject -is [System.Collections.IDictionary]) {
            if ($null -ne $state.Current) {
                Complete-Target
            }
            Open-Target -Header $InputObject
        }
        else {
            Write-Chunk -Text ([string]$InputObject)
        }
    }
    catch {
        Remove-Partial
        throw
    }
}

end {
    try {
        if ($null -ne $state.Current) {
            Complete-Target
        }
    }
    catch {
        # The last file fails here, not in process{}: its .partial must not stay either.
        Remove-Partial
        throw
    }
}
